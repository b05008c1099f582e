//! `[[domains]]`: the domains whose identities this server hosts, and the identity
//! that signs identity-lookup answers for each.

use std::collections::BTreeSet;

use super::Config;
use super::loader::{Loader, Raw, Section, identity};
use crate::identity::Identity;

/// A domain whose identities this server hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainSettings {
    /// The domain, e.g. `ebill.example`.
    pub name: String,
    /// The identity that signs identity-lookup answers (and delegations) for
    /// identities of this domain (`04-identity-dns.md` §6.2); `admin$<name>` unless
    /// configured.
    pub signer: Identity,
}

/// A domain name that can form identities (`admin$<domain>` must be valid).
fn domain_name(text: &str) -> Result<String, String> {
    let text = text.trim_end_matches('.');
    match Identity::parse(&format!("admin${text}")) {
        Ok(_) => Ok(text.to_owned()),
        Err(_) => Err(format!(
            "{text:?} is not a domain name usable in identities (e.g. ebill.example)"
        )),
    }
}

impl Loader<'_> {
    /// `[[domains]]` from the file; `BTPS_HOSTED_DOMAINS` replaces the list of names,
    /// keeping the signers the file gives for the names it keeps.
    pub(super) fn domains(&mut self, top: &mut Section, config: &mut Config) {
        self.consulted
            .insert(("domains[].name".to_owned(), Some("BTPS_HOSTED_DOMAINS")));
        self.consulted.insert(("domains[].signer".to_owned(), None));
        // (name, signer, where it was configured)
        let mut names: Vec<(String, Option<Identity>, String)> = Vec::new();
        match top.take("domains") {
            None => {}
            Some(toml::Value::Array(entries)) => {
                for (index, entry) in entries.into_iter().enumerate() {
                    let path = format!("domains[{index}]");
                    let toml::Value::Table(table) = entry else {
                        self.error(path, "expected a table with 'name' and optionally 'signer'");
                        continue;
                    };
                    let mut section = Section::new(path, table);
                    let named = section.table.contains_key("name");
                    let mut name: Option<String> = None;
                    self.optional(
                        &mut section,
                        "name",
                        None,
                        |raw| domain_name(&raw.text()?),
                        &mut name,
                    );
                    let mut signer: Option<Identity> = None;
                    self.optional(&mut section, "signer", None, identity, &mut signer);
                    match name {
                        Some(name) => names.push((name, signer, section.path.clone())),
                        None if !named => self.error(section.key("name"), "required"),
                        // Present but invalid: already reported.
                        None => {}
                    }
                    self.finish(section);
                }
            }
            Some(other) => self.error(
                "domains",
                format!("expected [[domains]] tables, found {}", other.type_str()),
            ),
        }
        if let Some(text) = self.env("BTPS_HOSTED_DOMAINS") {
            let mut replaced = Vec::new();
            for item in Raw::Env(text).list().unwrap_or_default() {
                match domain_name(&item) {
                    Ok(name) => {
                        let signer = names
                            .iter()
                            .find(|(known, _, _)| known.eq_ignore_ascii_case(&name))
                            .and_then(|(_, signer, _)| signer.clone());
                        replaced.push((name, signer, "BTPS_HOSTED_DOMAINS".to_owned()));
                    }
                    Err(message) => self.error("BTPS_HOSTED_DOMAINS", message),
                }
            }
            names = replaced;
        }
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for (name, signer, origin) in names {
            if !seen.insert(name.to_ascii_lowercase()) {
                self.error(origin, format!("domain {name:?} is listed twice"));
                continue;
            }
            let signer = match signer {
                Some(signer) if !signer.domain().eq_ignore_ascii_case(&name) => {
                    // Clients check that the signer belongs to the looked-up domain
                    // (`04-identity-dns.md` §6.4); any other signer is refused there.
                    self.error(
                        format!("{origin}.signer"),
                        format!("{signer} is not an identity of the domain {name}"),
                    );
                    continue;
                }
                Some(signer) => signer,
                None => match Identity::parse(&format!("admin${name}")) {
                    Ok(signer) => signer,
                    Err(error) => {
                        self.error(origin, error.to_string());
                        continue;
                    }
                },
            };
            config.domains.push(DomainSettings { name, signer });
        }
    }
}
