//! No command but `serve` creates a data directory by accident: they find it
//! through the configuration file as `serve` does (`--config`, `BTPS_CONFIG`,
//! /etc/btps/btps.toml), and refuse — naming the path, `--data-dir` and, where
//! the command has it, `--create` — when it does not exist. A warning names only
//! options the command has.

use std::path::Path;

use super::{btps, btps_env, ok, ok_json, stderr};

/// Every operator command that works on a data directory, the arguments it
/// needs besides `--data-dir`, and whether it has `--create`.
const COMMANDS: &[(&[&str], bool)] = &[
    (&["identity", "add", "finance$client.test"], true),
    (&["identity", "list"], false),
    (&["identity", "show", "finance$client.test"], false),
    (&["identity", "rotate-key", "finance$client.test"], false),
    (&["identity", "dns-records", "finance$client.test"], false),
    (&["trust", "list"], false),
    (
        &[
            "trust",
            "show",
            "billing$vendor.test",
            "finance$client.test",
        ],
        false,
    ),
    (
        &[
            "trust",
            "accept",
            "billing$vendor.test",
            "finance$client.test",
        ],
        false,
    ),
    (
        &[
            "trust",
            "block",
            "billing$vendor.test",
            "finance$client.test",
        ],
        false,
    ),
    (
        &[
            "trust",
            "delete",
            "billing$vendor.test",
            "finance$client.test",
        ],
        false,
    ),
    (&["inbox", "list", "finance$client.test"], false),
    (&["inbox", "show", "1"], false),
    (&["keygen", "--name", "k"], true),
    (&["backup", "--out", "backup.redb"], false),
    (&["check"], false),
    (&["restore", "backup.redb"], true),
    (&["import", "--trust", "trust.json"], true),
    (&["export", "--trust", "out.json"], false),
];

/// The files and directories in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn commands_refuse_a_data_directory_that_does_not_exist() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    std::fs::write(dir.join("backup.redb"), b"not yet a backup").unwrap();
    std::fs::write(dir.join("trust.json"), b"[]").unwrap();
    let before = listing(dir);
    let mistyped = dir.join("dta");
    for (args, has_create) in COMMANDS {
        let mut all = args.to_vec();
        all.extend(["--data-dir", "dta"]);
        let output = btps(dir, &all);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
        assert!(
            message.contains(&format!(
                "the data directory {} does not exist (given with --data-dir)",
                mistyped.display()
            )),
            "{args:?}: {message}"
        );
        assert!(message.contains("--data-dir DIR"), "{args:?}: {message}");
        assert_eq!(
            message.contains("--create"),
            *has_create,
            "{args:?}: {message}"
        );
        assert_eq!(listing(dir), before, "{args:?} created something");
    }

    // Without --data-dir and without a configuration file: the default, named as
    // such (unless this machine has an installed configuration).
    if !Path::new("/etc/btps/btps.toml").exists() {
        let output = btps(dir, &["identity", "add", "finance$client.test"]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{message}");
        assert!(
            message.contains(&format!(
                "the data directory {} does not exist (the default",
                dir.join("btps-data").display()
            )),
            "{message}"
        );
        assert!(message.contains("--create"), "{message}");
        assert_eq!(listing(dir), before);
    }

    // A data directory without a database: export does not create an empty one.
    std::fs::create_dir(&mistyped).unwrap();
    let output = btps(dir, &["export", "--data-dir", "dta", "--trust", "out.json"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("no database"),
        "{}",
        stderr(&output)
    );
    assert!(listing(&mistyped).is_empty());
    assert!(!dir.join("out.json").exists());

    // --create creates it, private.
    ok(&btps(
        dir,
        &[
            "identity",
            "add",
            "finance$client.test",
            "--data-dir",
            "new",
            "--create",
        ],
    ));
    assert_eq!(super::mode(&dir.join("new")), 0o700);
}

#[test]
fn commands_use_the_data_directory_of_the_configuration_file() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let data = dir.join("srv/btps");
    std::fs::create_dir_all(&data).unwrap();
    let config = dir.join("btps.toml");
    std::fs::write(&config, format!("data_dir = \"{}\"\n", data.display())).unwrap();
    let config = config.to_str().unwrap();

    // --config names the file; the identity lands in its data directory, and the
    // private key in that directory's keys/.
    let added = ok_json(&btps(
        dir,
        &[
            "identity",
            "add",
            "finance$client.test",
            "--config",
            config,
            "--json",
        ],
    ));
    assert!(data.join("btps.redb").exists());
    assert_eq!(
        dir.join(added["privateKeyFile"].as_str().unwrap()),
        data.join("keys/finance.client.test.btps1.key.pem")
    );
    assert!(!dir.join("btps-data").exists());
    // BTPS_CONFIG too.
    let listed = ok_json(&btps_env(
        dir,
        &["identity", "list", "--json"],
        &[("BTPS_CONFIG", config)],
    ));
    assert_eq!(listed[0]["identity"], "finance$client.test");
    // --data-dir wins over the file.
    let output = btps(
        dir,
        &[
            "identity",
            "list",
            "--config",
            config,
            "--data-dir",
            "other",
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("other does not exist"));

    // A missing data directory named by the file is reported as such.
    std::fs::write(dir.join("typo.toml"), "data_dir = \"/nonexistent/btps\"\n").unwrap();
    let output = btps(dir, &["trust", "list", "--config", "typo.toml"]);
    assert!(
        stderr(&output).contains(
            "the data directory /nonexistent/btps does not exist (data_dir in typo.toml)"
        ),
        "{}",
        stderr(&output)
    );
}

#[test]
fn warnings_suggest_only_options_the_command_has() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    for args in [
        &["identity", "add", "finance$client.test", "--create"][..],
        &["identity", "rotate-key", "finance$client.test"][..],
    ] {
        let mut all = args.to_vec();
        all.extend(["--data-dir", "data"]);
        let output = btps(dir, &all);
        ok(&output);
        let warnings = stderr(&output);
        assert!(
            warnings.contains("other machines cannot reach"),
            "{args:?}: {warnings}"
        );
        assert!(
            !warnings.contains("pass --host"),
            "{args:?} has no --host: {warnings}"
        );
        assert!(
            warnings.contains("btps identity dns-records 'finance$client.test' --host HOST:PORT"),
            "{args:?}: {warnings}"
        );
    }
    // dns-records has --host, and its warning says so.
    let output = btps(
        dir,
        &[
            "identity",
            "dns-records",
            "finance$client.test",
            "--data-dir",
            "data",
        ],
    );
    ok(&output);
    assert!(
        stderr(&output).contains("pass --host"),
        "{}",
        stderr(&output)
    );
}
