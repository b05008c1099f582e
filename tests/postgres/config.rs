//! `storage.type = "postgres"` in the configuration: the reference's environment
//! names, what is refused and why, and `btps check-config`, which names every
//! variable it reads or ignores and never prints the password.

use std::collections::HashMap;
use std::process::Command;

use btps::config::{Config, ConfigErrors, StorageKind};

fn load(toml: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let dir = tempfile::tempdir().unwrap();
    let file = toml.map(|text| {
        let path = dir.path().join("btps.toml");
        std::fs::write(&path, text).unwrap();
        path
    });
    let env: HashMap<String, String> = env
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    Config::load(file.as_deref(), &|name| env.get(name).cloned())
}

fn problems(result: Result<Config, ConfigErrors>) -> Vec<(String, String)> {
    match result {
        Ok(config) => panic!("expected problems, got {config:?}"),
        Err(errors) => errors
            .0
            .into_iter()
            .map(|error| (error.setting, error.message))
            .collect(),
    }
}

#[test]
fn the_references_names_select_postgres_as_written() {
    let config = load(
        None,
        &[
            ("STORAGE_TYPE", "postgres"),
            ("POSTGRES_URI", "postgresql://btps:pw@db:5432/btps"),
            ("POSTGRES_TABLE", "trust_records"),
            ("POSTGRES_IDENTITY_TABLE", "identity_records"),
        ],
    )
    .unwrap();
    assert_eq!(config.storage.kind, StorageKind::Postgres);
    assert_eq!(config.storage.postgres.trust_table, "trust_records");
    assert_eq!(config.storage.postgres.identity_table, "identity_records");
    assert!(!format!("{config:?}").contains(":pw@"));

    let from_file = load(
        Some(
            "[storage]\ntype = \"postgres\"\n[storage.postgres]\nuri = \"host=db user=btps\"\npool_size = 4\nconnect_timeout_ms = 900\n",
        ),
        &[],
    )
    .unwrap();
    assert_eq!(from_file.storage.postgres.pool_size, 4);
    assert_eq!(from_file.storage.postgres.trust_table, "btps_trust");
}

#[test]
fn what_postgres_storage_cannot_work_with_is_named() {
    let found = problems(load(None, &[("STORAGE_TYPE", "postgres")]));
    assert_eq!(found[0].0, "storage.postgres.uri");
    assert!(found[0].1.contains("POSTGRES_URI"), "{found:?}");

    let found = problems(load(None, &[("STORAGE_TYPE", "mongodb")]));
    assert_eq!(
        found,
        [(
            "STORAGE_TYPE".to_owned(),
            "MongoDB is not supported; use postgres or redb".to_owned()
        )]
    );

    let found = problems(load(
        None,
        &[
            ("POSTGRES_TABLE", "trust; drop table x"),
            ("POSTGRES_IDENTITY_TABLE", "Ids"),
        ],
    ));
    let names: Vec<&str> = found.iter().map(|(setting, _)| setting.as_str()).collect();
    assert_eq!(names, ["POSTGRES_TABLE", "POSTGRES_IDENTITY_TABLE"]);

    let found = problems(load(
        Some("[storage.postgres]\ntrust_table = \"same\"\nidentity_table = \"same\"\nur = \"x\"\n"),
        &[],
    ));
    let names: Vec<&str> = found.iter().map(|(setting, _)| setting.as_str()).collect();
    assert!(
        names.contains(&"storage.postgres.identity_table"),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|(setting, message)| setting == "storage.postgres.ur" && message.contains("uri")),
        "{found:?}"
    );
}

fn check_config(env: &[(&str, &str)], json: bool) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_btps"));
    command
        .args(["check-config", "--config", "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    if json {
        command.arg("--json");
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

#[test]
fn check_config_names_every_variable_and_hides_the_password() {
    let env = [
        ("STORAGE_TYPE", "postgres"),
        (
            "POSTGRES_URI",
            "postgres://btps:Sup3rSecret@db.example/btps",
        ),
        ("MONGODB_URI", "mongodb://x:AlsoSecret@mongo/btps"),
        ("MONGODB_COLLECTION", "trust_records"),
        ("BTPS_POSTGRESS_POOL_SIZE", "4"),
        ("MIDDLEWARE_PATH", "./btps.middleware.mjs"),
    ];
    let (ok, text) = check_config(&env, false);
    assert!(ok, "{text}");
    assert!(
        !text.contains("Sup3rSecret") && !text.contains("AlsoSecret"),
        "{text}"
    );
    assert!(
        text.contains("postgres://btps:***@db.example/btps"),
        "{text}"
    );
    assert!(
        text.contains("POSTGRES_URI: sets storage.postgres.uri"),
        "{text}"
    );
    assert!(text.contains("STORAGE_TYPE: sets storage.type"), "{text}");
    assert!(
        text.contains("MONGODB_URI: unsupported: MongoDB is not supported; use postgres or redb"),
        "{text}"
    );
    assert!(text.contains("MONGODB_COLLECTION: unsupported"), "{text}");
    assert!(text.contains("MIDDLEWARE_PATH: unsupported"), "{text}");
    assert!(
        text.contains(
            "BTPS_POSTGRESS_POOL_SIZE: unknown, not read; did you mean BTPS_POSTGRES_POOL_SIZE?"
        ),
        "{text}"
    );

    let (ok, text) = check_config(&env, true);
    assert!(ok, "{text}");
    assert!(!text.contains("Sup3rSecret"), "{text}");
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let states: HashMap<String, String> = value["environment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|note| {
            (
                note["name"].as_str().unwrap().to_owned(),
                note["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(states["POSTGRES_URI"], "recognised");
    assert_eq!(states["MONGODB_URI"], "unsupported");
    assert_eq!(states["BTPS_POSTGRESS_POOL_SIZE"], "unknown");

    // STORAGE_TYPE=mongodb is a problem, and the report still names the variables.
    let (ok, text) = check_config(
        &[("STORAGE_TYPE", "mongodb"), ("MONGODB_URI", "mongodb://m")],
        true,
    );
    assert!(!ok);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        value["problems"][0]["message"],
        "MongoDB is not supported; use postgres or redb"
    );
    assert_eq!(value["environment"][0]["name"], "MONGODB_URI");
}

#[test]
fn backup_check_and_restore_point_a_postgres_server_to_pg_dump() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for args in [
        vec!["backup", "--out", "x.redb"],
        vec!["check"],
        vec!["restore", "x.redb"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_btps"))
            .args(&args)
            .args(["--json", "--data-dir"])
            .arg(&data)
            .current_dir(temp.path())
            .env_remove("BTPS_CONFIG")
            .env_remove("BTPS_DATA_DIR")
            .env("STORAGE_TYPE", "postgres")
            .env("POSTGRES_URI", "postgres://btps:Hidden1@127.0.0.1:1/btps")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(text.contains("redb backend only"), "{args:?}: {text}");
        assert!(text.contains("pg_dump"), "{args:?}: {text}");
        assert!(!text.contains("Hidden1"), "{args:?}: {text}");
    }
}

/// A node that cannot reach its database stops with a message naming it — with
/// the password hidden, also in the debug log.
#[test]
fn serve_never_logs_the_password() {
    let temp = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_btps"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(temp.path().join("data"))
        .current_dir(temp.path())
        .env_remove("BTPS_CONFIG")
        .env_remove("BTPS_DATA_DIR")
        .env("RUST_LOG", "debug")
        .env("BTPS_HTTP_LISTEN", "off")
        .env("STORAGE_TYPE", "postgres")
        .env(
            "POSTGRES_URI",
            "postgres://btps:TopSecret9@127.0.0.1:1/btps",
        )
        .env("BTPS_POSTGRES_CONNECT_TIMEOUT_MS", "500")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        text.contains("postgres://btps:***@127.0.0.1:1/btps"),
        "{text}"
    );
    assert!(!text.contains("TopSecret9"), "{text}");
}
