//! The agents' part of the storage contract on every backend: enrollment tokens and
//! sessions in transactions (all or nothing), the sweep, and mailbox queries
//! checked against the spec's semantics (`model::run_query`) over random entries
//! and random queries, paged to the end through cursors.

use std::sync::Arc;

use btps::model::{enrollment_token_key, refresh_token_hash, run_query};
use btps::store::{
    AgentSession, EnrollmentToken, EntryFilter, EntryKind, EntryMeta, ListingPosition, Mailbox,
    MailboxEntry, MailboxQuery, Storage, StoreError, TextFilter, Timestamp,
};

use super::contract::backends;

const OWNER: &str = "finance$client.test";

fn at(millis: i64) -> Timestamp {
    Timestamp::from_millis(millis).unwrap()
}

fn token(expires: i64) -> EnrollmentToken {
    EnrollmentToken {
        identity: OWNER.to_owned(),
        created_at: at(1_000),
        expires_at: at(expires),
        decrypt_by: "admin$client.test".to_owned(),
        issued_by: "test".to_owned(),
        metadata: None,
    }
}

fn session(agent: &str, owner: &str, expires: i64) -> AgentSession {
    AgentSession {
        agent_id: agent.to_owned(),
        owner: owner.to_owned(),
        created_at: at(1_000),
        refresh_hash: refresh_token_hash(agent),
        refresh_expires_at: at(expires),
        decrypt_by: "admin$client.test".to_owned(),
        agent_info: None,
        last_refresh_at: None,
        retired: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_sessions_are_transactional_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    for (name, storage) in backends(dir.path()) {
        let agents = storage
            .agents()
            .unwrap_or_else(|| panic!("{name}: no agents"));
        let key = enrollment_token_key(OWNER, "ABCD2345");
        storage
            .transact(OWNER, &mut |tx| {
                tx.put_enrollment_token(&key, &token(5_000))?;
                tx.put_session(&session("btps_ag_a", OWNER, 9_000))?;
                tx.put_session(&session("btps_ag_b", "Finance$Client.test", 2_000))?;
                tx.put_session(&session("btps_ag_c", "other$client.test", 9_000))?;
                Ok(())
            })
            .unwrap();
        let mut mine: Vec<String> = agents
            .sessions(Some("FINANCE$client.test"))
            .await
            .unwrap()
            .into_iter()
            .map(|session| session.agent_id)
            .collect();
        mine.sort();
        assert_eq!(mine, ["btps_ag_a", "btps_ag_b"], "{name}");
        assert_eq!(agents.sessions(None).await.unwrap().len(), 3, "{name}");
        assert_eq!(agents.enrollment_tokens().await.unwrap().len(), 1, "{name}");

        // A failed transaction leaves nothing of what it did.
        let failed = storage.transact(OWNER, &mut |tx| {
            assert!(tx.delete_enrollment_token(&key)?);
            tx.delete_session("btps_ag_a")?;
            tx.put_session(&session("btps_ag_d", OWNER, 9_000))?;
            Err(StoreError::TaskFailed("on purpose".to_owned()))
        });
        assert!(failed.is_err(), "{name}");
        assert!(
            agents.session("btps_ag_a").await.unwrap().is_some(),
            "{name}"
        );
        assert!(
            agents.session("btps_ag_d").await.unwrap().is_none(),
            "{name}"
        );
        assert_eq!(agents.enrollment_tokens().await.unwrap().len(), 1, "{name}");
        // Reads in a transaction see its own writes.
        storage
            .transact(OWNER, &mut |tx| {
                let mut moved = tx.session("btps_ag_c")?.unwrap();
                moved.owner = OWNER.to_owned();
                tx.put_session(&moved)?;
                assert_eq!(tx.session("btps_ag_c")?.unwrap().owner, OWNER);
                assert!(tx.enrollment_token(&key)?.is_some());
                Ok(())
            })
            .unwrap();
        assert_eq!(
            agents.sessions(Some(OWNER)).await.unwrap().len(),
            3,
            "{name}"
        );
        assert!(
            agents
                .sessions(Some("other$client.test"))
                .await
                .unwrap()
                .is_empty(),
            "{name}: the owner index moved with the session"
        );

        // The sweep takes what expired, nothing else.
        assert_eq!(agents.sweep(3_000).unwrap(), (0, 1), "{name}");
        assert_eq!(agents.sweep(6_000).unwrap(), (1, 0), "{name}");
        assert_eq!(agents.sweep(6_000).unwrap(), (0, 0), "{name}");
        assert_eq!(agents.sessions(None).await.unwrap().len(), 2, "{name}");
    }
}

/// A small deterministic generator.
struct Cases(u64);

impl Cases {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[usize::try_from(self.below(items.len() as u64)).unwrap()]
    }
}

const SENDERS: [&str; 3] = [
    "billing$vendor.test",
    "Billing$Vendor.test",
    "ap$other.test",
];
const TITLES: [&str; 4] = ["Invoice March", "invoice april", "Credit note", ""];

fn new_entry(cases: &mut Cases, owner: &str, mailbox: Mailbox, index: u64) -> MailboxEntry {
    let title = cases.pick(&TITLES);
    MailboxEntry {
        entry_id: 0,
        owner: owner.to_owned(),
        mailbox,
        origin: None,
        // Few distinct instants: ties are broken by entry id.
        at_millis: 1_700_000_000_000 + i64::try_from(cases.below(12)).unwrap() * 1_000,
        kind: EntryKind::Transporter,
        artifact_id: format!("a-{index}"),
        artifact_type: "BTPS_DOC".to_owned(),
        from: cases.pick(&SENDERS).to_owned(),
        to: owner.to_owned(),
        title: (!title.is_empty()).then(|| title.to_owned()),
        raw: format!(r#"{{"id":"a-{index}"}}"#).into_bytes(),
        meta: EntryMeta::default(),
    }
}

fn random_filter(cases: &mut Cases) -> EntryFilter {
    let mut filter = EntryFilter::default();
    match cases.below(6) {
        0 => {}
        1 => {
            filter.from = Some(TextFilter {
                eq: Some("billing$vendor.test".to_owned()),
                ..TextFilter::default()
            });
        }
        2 => {
            filter.title = Some(TextFilter {
                like: Some("INVOICE".to_owned()),
                ..TextFilter::default()
            });
        }
        3 => {
            filter.title = Some(TextFilter {
                not_like: Some("note".to_owned()),
                ne: Some("invoice april".to_owned()),
                ..TextFilter::default()
            });
        }
        4 => {
            filter.from = Some(TextFilter {
                none_of: Some(vec!["AP$OTHER.TEST".to_owned()]),
                ..TextFilter::default()
            });
            filter.title = Some(TextFilter {
                any_of: Some(vec!["Credit note".to_owned(), "Invoice March".to_owned()]),
                ..TextFilter::default()
            });
        }
        _ => {
            filter.to = Some(TextFilter {
                eq: Some("nobody$x.test".to_owned()),
                ..TextFilter::default()
            });
        }
    }
    filter
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_follow_the_spec_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    for (name, storage) in backends(dir.path()) {
        let mut cases = Cases(0x9e37_79b9_7f4a_7c15);
        // 60 inbox entries of the owner, and others that no query of it may see.
        let mut expected: Vec<MailboxEntry> = Vec::new();
        for index in 0..80 {
            let (owner, mailbox) = match index % 8 {
                6 => ("other$client.test", Mailbox::Inbox),
                7 => (OWNER, Mailbox::Trash),
                _ => (OWNER, Mailbox::Inbox),
            };
            let entry = new_entry(&mut cases, owner, mailbox, index);
            let mut stored = entry.clone();
            storage
                .transact(OWNER, &mut |tx| {
                    stored.entry_id = tx.insert_entry(entry.clone())?;
                    Ok(())
                })
                .unwrap();
            if owner == OWNER && mailbox == Mailbox::Inbox {
                expected.push(stored);
            }
        }
        expected.sort_by_key(|entry| (entry.at_millis, entry.entry_id));
        let ids = |entries: &[MailboxEntry]| -> Vec<u64> {
            entries.iter().map(|entry| entry.entry_id).collect()
        };
        for round in 0..60 {
            let since = (cases.below(3) == 0)
                .then(|| 1_700_000_000_000 + i64::try_from(cases.below(12)).unwrap() * 1_000);
            let until = (cases.below(3) == 0)
                .then(|| 1_700_000_000_000 + i64::try_from(cases.below(12)).unwrap() * 1_000);
            let mut query = MailboxQuery {
                since,
                until,
                newest_first: cases.below(2) == 0,
                after: None,
                limit: u32::try_from(cases.below(9) + 1).unwrap(),
                filter: random_filter(&mut cases),
            };
            // Every page against the model, then all pages together against the
            // whole ordered answer.
            let whole = run_query(
                expected.iter(),
                &MailboxQuery {
                    limit: 1_000,
                    ..query.clone()
                },
            );
            let mut seen = Vec::new();
            loop {
                let page = storage
                    .mailboxes()
                    .query("Finance$Client.test", Mailbox::Inbox, &query)
                    .await
                    .unwrap();
                let model = run_query(expected.iter(), &query);
                assert_eq!(
                    ids(&page.items),
                    ids(&model.items),
                    "{name} round {round}: {query:?}"
                );
                assert_eq!(page.has_next, model.has_next, "{name} round {round}");
                assert_eq!(page.total, whole.total, "{name} round {round}");
                seen.extend(ids(&page.items));
                match page.items.last() {
                    Some(last) if page.has_next => query.after = Some(ListingPosition::of(last)),
                    _ => break,
                }
            }
            assert_eq!(seen, ids(&whole.items), "{name} round {round}");
        }
        // An empty window, and a window with nothing in it.
        let empty = storage
            .mailboxes()
            .query(
                OWNER,
                Mailbox::Inbox,
                &MailboxQuery {
                    since: Some(10),
                    until: Some(5),
                    newest_first: true,
                    after: None,
                    limit: 10,
                    filter: EntryFilter::default(),
                },
            )
            .await
            .unwrap();
        assert_eq!((empty.items.len(), empty.total), (0, 0), "{name}");
        let _: Arc<dyn Storage> = storage;
    }
}
