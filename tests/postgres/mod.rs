//! The PostgreSQL backend against a real server: the cluster `.ci/run` (or
//! `.ci/postgres run -- …` locally) starts on a free loopback port and names in
//! `BTPS_TEST_POSTGRES_URI`. Each test works in a schema of its own, so tests run
//! side by side on one cluster. Under CI (`CI=true`) a missing URI fails the
//! tests instead of skipping them.

mod backend;
mod config;
mod delivery;
mod migrate;
mod nodes;
mod restart;

use std::sync::Arc;

use btps::store::{PgOptions, PgStorage};

/// The test cluster's URI; `None` (the test is skipped) only outside CI.
pub(crate) fn uri() -> Option<String> {
    match std::env::var("BTPS_TEST_POSTGRES_URI") {
        Ok(uri) if !uri.trim().is_empty() => Some(uri),
        _ => {
            let ci = std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false");
            assert!(
                !ci,
                "BTPS_TEST_POSTGRES_URI is not set: under CI the PostgreSQL tests must run \
                 (.ci/run starts a cluster; locally: .ci/postgres run -- cargo test)"
            );
            eprintln!("BTPS_TEST_POSTGRES_URI is not set: skipping a PostgreSQL test");
            None
        }
    }
}

/// Runs one SQL batch on the cluster (as its superuser), from any thread.
pub(crate) fn admin_sql(uri: &str, sql: &str) {
    let uri = uri.to_owned();
    let sql = sql.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&uri, tokio_postgres::NoTls)
                .await
                .unwrap();
            let driver = tokio::spawn(connection);
            client.batch_execute(&sql).await.unwrap();
            drop(client);
            let _ = driver.await;
        });
    })
    .join()
    .unwrap();
}

/// A new, empty schema of the test cluster, and the URI whose connections use it.
pub(crate) fn fresh_schema(uri: &str) -> (String, String) {
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    admin_sql(uri, &format!("CREATE SCHEMA {schema}"));
    let separator = if uri.contains('?') { '&' } else { '?' };
    // The application name tells this test's connections apart from the others'
    // (`cut_connections`).
    (
        schema.clone(),
        format!("{uri}{separator}options=-csearch_path%3D{schema}&application_name={schema}"),
    )
}

/// Ends every connection made to `schema`'s URI, as a database restart does.
pub(crate) fn cut_connections(uri: &str, schema: &str) {
    admin_sql(
        uri,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = '{schema}' AND pid <> pg_backend_pid()"
        ),
    );
}

/// Options for a node on `uri` named `node`.
pub(crate) fn options(uri: &str, node: &str) -> PgOptions {
    PgOptions {
        node: node.to_owned(),
        pool_size: 4,
        ..PgOptions::new(uri)
    }
}

/// A backend on a fresh schema, when the cluster is there.
pub(crate) fn storage() -> Option<Arc<PgStorage>> {
    let base = uri()?;
    let (_, uri) = fresh_schema(&base);
    Some(Arc::new(
        PgStorage::connect(&options(&uri, "test-node")).unwrap(),
    ))
}
