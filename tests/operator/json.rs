//! Every operator command has `--json`, and the ones that gained it print one JSON
//! document a script can read.

use super::{btps, ok_json};
use crate::util::vectors_dir;

/// The operator commands: everything that reads or changes the appliance's state
/// or configuration.
const OPERATOR_COMMANDS: &[&[&str]] = &[
    &["identity", "add"],
    &["identity", "list"],
    &["identity", "show"],
    &["identity", "rotate-key"],
    &["identity", "dns-records"],
    &["trust", "list"],
    &["trust", "show"],
    &["trust", "accept"],
    &["trust", "reject"],
    &["trust", "revoke"],
    &["trust", "block"],
    &["trust", "delete"],
    &["inbox", "list"],
    &["inbox", "show"],
    &["backup"],
    &["restore"],
    &["check"],
    &["import"],
    &["export"],
    &["keygen"],
    &["check-config"],
];

#[test]
fn every_operator_command_has_json() {
    let temp = tempfile::tempdir().unwrap();
    for command in OPERATOR_COMMANDS {
        let mut args = command.to_vec();
        args.push("--help");
        let output = btps(temp.path(), &args);
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{command:?}: {help}");
        assert!(
            help.contains("--json"),
            "{command:?} has no --json:\n{help}"
        );
    }
}

#[test]
fn import_export_and_check_config_print_json() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let stores = vectors_dir().join("json-stores");
    let imported = ok_json(&btps(
        dir,
        &[
            "import",
            "--data-dir",
            "data",
            "--create",
            "--json",
            "--trust",
            stores.join("trust.json").to_str().unwrap(),
            "--identities",
            stores.join("identities.json").to_str().unwrap(),
        ],
    ));
    assert_eq!(imported["ok"], true, "{imported}");
    let identities = imported["identities"]["imported"].as_u64().unwrap();
    let trust = imported["trust"]["imported"].as_u64().unwrap();
    assert!(identities > 0 && trust > 0, "{imported}");
    assert!(imported["warnings"].is_array(), "{imported}");

    let exported = ok_json(&btps(
        dir,
        &[
            "export",
            "--data-dir",
            "data",
            "--json",
            "--trust",
            "trust.json",
            "--identities",
            "identities.json",
        ],
    ));
    assert_eq!(exported["ok"], true, "{exported}");
    assert_eq!(exported["identities"]["records"], identities, "{exported}");
    assert_eq!(exported["identities"]["file"], "identities.json");
    assert_eq!(exported["trust"]["file"], "trust.json");

    std::fs::write(
        dir.join("btps.toml"),
        "data_dir = \"data\"\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let checked = ok_json(&btps(
        dir,
        &["check-config", "--config", "btps.toml", "--json"],
    ));
    assert_eq!(checked["ok"], true, "{checked}");
    let summary = checked["summary"].as_array().unwrap();
    assert!(
        summary
            .iter()
            .any(|line| line["area"] == "data dir" && line["value"] == "data (exists)"),
        "{checked}"
    );
    std::fs::write(dir.join("bad.toml"), "listen = \"nowhere\"\nbogus = 1\n").unwrap();
    let refused = btps(dir, &["check-config", "--config", "bad.toml", "--json"]);
    assert_eq!(refused.status.code(), Some(2));
    let problems: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert_eq!(problems["ok"], false);
    assert_eq!(
        problems["problems"].as_array().unwrap().len(),
        2,
        "{problems}"
    );
    assert!(
        problems["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|problem| problem["setting"] == "listen"),
        "{problems}"
    );
}
