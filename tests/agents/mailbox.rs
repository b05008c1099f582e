//! Mailbox queries and mailbox actions (`spec/07-agents-auth.md` §3.2, §4, §5).

use btps::agent::{AgentError, Query};
use btps::protocol::AgentAction;
use btps::protocol::json::{self, Value};
use btps::store::Mailbox;

use super::{BILLING, FINANCE, deliver, enroll, trust};
use crate::util::server::{TestOptions, TestServer};

fn refusal(outcome: Result<impl std::fmt::Debug, AgentError>) -> (String, Option<String>) {
    match outcome {
        Err(AgentError::Refused {
            message, reason, ..
        }) => (message, reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A server where BILLING is trusted by FINANCE and has delivered `titles`, in order.
async fn inbox_with(titles: &[&str]) -> TestServer {
    let server = TestServer::start(TestOptions::default()).await;
    trust(&server, BILLING, "billing", FINANCE);
    for (index, title) in titles.iter().enumerate() {
        deliver(&server, &format!("doc-{index}"), title).await;
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_pages_with_filters_and_a_stable_cursor() {
    let titles = [
        "Invoice March",
        "Invoice April",
        "Credit note",
        "Invoice May",
        "Reminder",
        "Invoice June",
        "Invoice July",
    ];
    let server = inbox_with(&titles).await;
    let (mut agent, _) = enroll(&server, FINANCE, "agent-device").await;

    // Everything, newest first, three pages of three.
    let first = agent
        .fetch(Mailbox::Inbox, &Query::new().limit(3))
        .await
        .unwrap();
    assert_eq!(first.artifact_ids(), ["doc-6", "doc-5", "doc-4"]);
    assert_eq!(first.total, Some(7));
    assert!(first.has_next);
    // The embedded artifact is the JSON received: its signature still verifies.
    let artifact = first.results[0]
        .as_object()
        .unwrap()
        .get("artifact")
        .unwrap()
        .clone();
    let line = artifact.to_canonical();
    let parsed = btps::protocol::parse_line(line.as_bytes())
        .unwrap()
        .unwrap();
    let btps::protocol::Artifact::Transporter(parsed) = parsed else {
        panic!("not a transporter artifact")
    };
    let mut keys = btps::signing::StaticKeys::new();
    keys.insert(
        &btps::identity::Identity::parse(BILLING).unwrap(),
        "btps1",
        crate::util::server::vector_key("billing")
            .public_key()
            .clone(),
    );
    btps::signing::verify_transporter(&parsed, &keys)
        .await
        .unwrap();
    let meta = first.results[0]
        .as_object()
        .unwrap()
        .get("meta")
        .unwrap()
        .clone();
    let meta = meta.as_object().unwrap();
    assert_eq!(meta.get("seen"), Some(&Value::Bool(false)));
    assert!(meta.str("receivedAt").is_some());
    assert!(meta.str("entryId").is_some());
    assert!(meta.get("seenAt").is_none());

    // A document delivered between two pages shows up on no later page.
    deliver(&server, "doc-late", "Invoice August").await;
    let second = agent
        .fetch(
            Mailbox::Inbox,
            &Query::new()
                .limit(3)
                .cursor(first.cursor.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(second.artifact_ids(), ["doc-3", "doc-2", "doc-1"]);
    assert_eq!(second.total, Some(8));
    let third = agent
        .fetch(
            Mailbox::Inbox,
            &Query::new()
                .limit(3)
                .cursor(second.cursor.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(third.artifact_ids(), ["doc-0"]);
    assert!(!third.has_next);
    assert!(third.cursor.is_none());

    // Oldest first, titles containing "invoice" (ignoring case), two at a time.
    let query = Query::new()
        .oldest_first()
        .limit(2)
        .filter("title", "like", "INVOICE");
    let page = agent.fetch(Mailbox::Inbox, &query).await.unwrap();
    assert_eq!(page.artifact_ids(), ["doc-0", "doc-1"]);
    assert_eq!(page.total, Some(6));
    let next = agent
        .fetch(
            Mailbox::Inbox,
            &query.clone().cursor(page.cursor.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(next.artifact_ids(), ["doc-3", "doc-5"]);
    // eq compares titles exactly; in, notIn and notLike combine.
    let exact = agent
        .fetch(
            Mailbox::Inbox,
            &Query::new().filter("title", "eq", "Reminder"),
        )
        .await
        .unwrap();
    assert_eq!(exact.artifact_ids(), ["doc-4"]);
    let combined = agent
        .fetch(
            Mailbox::Inbox,
            &Query::new().filter("title", "notLike", "invoice").filter(
                "from",
                "in",
                Value::Array(vec![Value::from("BILLING$vendor.test")]),
            ),
        )
        .await
        .unwrap();
    assert_eq!(combined.artifact_ids(), ["doc-4", "doc-2"]);
    let nobody = agent
        .fetch(
            Mailbox::Inbox,
            &Query::new().filter("from", "eq", "x$y.test"),
        )
        .await
        .unwrap();
    assert_eq!((nobody.results.len(), nobody.total), (0, Some(0)));

    // Time bounds are inclusive; an empty window is empty.
    let everything = agent
        .fetch(Mailbox::Inbox, &Query::new().limit(100))
        .await
        .unwrap();
    let received = |index: usize| {
        everything.results[index]
            .as_object()
            .unwrap()
            .get("meta")
            .unwrap()
            .as_object()
            .unwrap()
            .str("receivedAt")
            .unwrap()
            .to_owned()
    };
    let newest = received(0);
    let window = agent
        .fetch(Mailbox::Inbox, &Query::new().since(&newest).until(&newest))
        .await
        .unwrap();
    assert!(window.artifact_ids().contains(&String::from("doc-late")));
    let empty = agent
        .fetch(
            Mailbox::Inbox,
            &Query::new()
                .since("2030-01-01T00:00:00.000Z")
                .until("2029-01-01T00:00:00.000Z"),
        )
        .await
        .unwrap();
    assert_eq!((empty.results.len(), empty.total), (0, Some(0)));

    // The other mailboxes are empty.
    for mailbox in [
        Mailbox::Outbox,
        Mailbox::Sentbox,
        Mailbox::Draft,
        Mailbox::Trash,
    ] {
        let page = agent.fetch(mailbox, &Query::new()).await.unwrap();
        assert_eq!(page.total, Some(0), "{mailbox}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_of_another_query_and_bad_queries_are_refused() {
    let server = inbox_with(&["A", "B", "C"]).await;
    let (mut agent, _) = enroll(&server, FINANCE, "agent-device").await;
    let page = agent
        .fetch(Mailbox::Inbox, &Query::new().limit(1))
        .await
        .unwrap();
    let cursor = page.cursor.unwrap();
    // Another mailbox, other filters, the other order: each is another query.
    for (mailbox, query) in [
        (Mailbox::Trash, Query::new().limit(1).cursor(&cursor)),
        (
            Mailbox::Inbox,
            Query::new()
                .limit(1)
                .filter("title", "like", "x")
                .cursor(&cursor),
        ),
        (
            Mailbox::Inbox,
            Query::new()
                .limit(1)
                .since("2020-01-01T00:00:00.000Z")
                .cursor(&cursor),
        ),
    ] {
        let (message, reason) = refusal(agent.fetch(mailbox, &query).await);
        assert_eq!(message, "BTPS artifact validation failed");
        assert_eq!(reason.as_deref(), Some("cursor of another query"));
    }
    let (_, reason) = refusal(
        agent
            .fetch(Mailbox::Inbox, &Query::new().oldest_first().cursor(&cursor))
            .await,
    );
    assert_eq!(reason.as_deref(), Some("invalid cursor"));
    let (_, reason) = refusal(
        agent
            .fetch(Mailbox::Inbox, &Query::new().cursor("not-a-cursor"))
            .await,
    );
    assert_eq!(reason.as_deref(), Some("invalid cursor"));
    // A trust listing's cursor is no inbox cursor either.
    let (_, reason) = refusal(
        agent
            .trust_list(&Query::new().limit(1).cursor(&cursor))
            .await,
    );
    assert_eq!(reason.as_deref(), Some("cursor of another query"));
    // Limits: at least 1, integral; more than 100 is 100.
    for limit in ["0", "2.5", "-1"] {
        let document = json::parse(&format!(r#"{{"limit":{limit}}}"#)).unwrap();
        let (message, _) = refusal(agent.command(AgentAction::InboxFetch, Some(document)).await);
        assert_eq!(message, "BTPS artifact validation failed", "limit {limit}");
    }
    let document = json::parse(r#"{"limit":1000}"#).unwrap();
    agent
        .command(AgentAction::InboxFetch, Some(document))
        .await
        .unwrap();
    // An empty query document is refused (the reference's schema rule).
    let (message, _) = refusal(
        agent
            .command(AgentAction::InboxFetch, Some(json::parse("{}").unwrap()))
            .await,
    );
    assert_eq!(message, "BTPS artifact validation failed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seen_delete_and_purge_move_entries_between_mailboxes() {
    let server = inbox_with(&["One", "Two", "Three"]).await;
    let (mut agent, _) = enroll(&server, FINANCE, "agent-device").await;

    // Seen: once each, unknown ids reported, duplicates taken once.
    let done = agent
        .mark_seen(&["doc-0", "doc-1", "doc-0", "nope"])
        .await
        .unwrap();
    assert_eq!(done.updated, ["doc-0", "doc-1"]);
    assert_eq!(done.not_found, ["nope"]);
    let page = agent.fetch(Mailbox::Inbox, &Query::new()).await.unwrap();
    let seen: Vec<(String, bool, bool)> = page
        .results
        .iter()
        .map(|result| {
            let result = result.as_object().unwrap();
            let meta = result.get("meta").unwrap().as_object().unwrap();
            (
                result
                    .get("artifact")
                    .unwrap()
                    .as_object()
                    .unwrap()
                    .str("id")
                    .unwrap()
                    .to_owned(),
                meta.get("seen") == Some(&Value::Bool(true)),
                meta.str("seenAt").is_some(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("doc-2".to_owned(), false, false),
            ("doc-1".to_owned(), true, true),
            ("doc-0".to_owned(), true, true)
        ]
    );
    // Seen again: seenAt is kept.
    let first_seen_at = |page: &btps::agent::QueryResult| {
        page.results[2]
            .as_object()
            .unwrap()
            .get("meta")
            .unwrap()
            .as_object()
            .unwrap()
            .str("seenAt")
            .unwrap()
            .to_owned()
    };
    let before = first_seen_at(&page);
    agent.mark_seen(&["doc-0"]).await.unwrap();
    let again = agent.fetch(Mailbox::Inbox, &Query::new()).await.unwrap();
    assert_eq!(first_seen_at(&again), before);

    // Delete: to the trash, with its origin.
    let done = agent.delete(Mailbox::Inbox, &["doc-1"]).await.unwrap();
    assert_eq!(done.updated, ["doc-1"]);
    let inbox = agent.fetch(Mailbox::Inbox, &Query::new()).await.unwrap();
    assert_eq!(inbox.artifact_ids(), ["doc-2", "doc-0"]);
    let trash = agent.fetch(Mailbox::Trash, &Query::new()).await.unwrap();
    assert_eq!(trash.artifact_ids(), ["doc-1"]);
    let meta = trash.results[0]
        .as_object()
        .unwrap()
        .get("meta")
        .unwrap()
        .as_object()
        .unwrap()
        .clone();
    assert_eq!(meta.str("origin"), Some("inbox"));
    assert!(meta.str("trashedAt").is_some());
    // The trash of the inbox is not the inbox: seen on it finds nothing.
    let done = agent.mark_seen(&["doc-1"]).await.unwrap();
    assert_eq!(done.not_found, ["doc-1"]);

    // Purge: gone for good.
    let done = agent
        .delete(Mailbox::Trash, &["doc-1", "doc-2"])
        .await
        .unwrap();
    assert_eq!(
        (done.updated.as_slice(), done.not_found.as_slice()),
        (
            ["doc-1".to_owned()].as_slice(),
            ["doc-2".to_owned()].as_slice()
        )
    );
    let trash = agent.fetch(Mailbox::Trash, &Query::new()).await.unwrap();
    assert_eq!(trash.total, Some(0));
    // An empty list succeeds with empty answers.
    let done = agent.delete(Mailbox::Inbox, &[]).await.unwrap();
    assert!(done.updated.is_empty() && done.not_found.is_empty());
    // The counts follow: two in the inbox, nothing in the trash.
    let inbox = agent.fetch(Mailbox::Inbox, &Query::new()).await.unwrap();
    assert_eq!(inbox.total, Some(2));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_are_created_updated_and_deleted() {
    let server = TestServer::start(TestOptions::default()).await;
    let (mut agent, _) = enroll(&server, FINANCE, "agent-device").await;
    let invoice = json::parse(&crate::util::server::invoice("INV-9")).unwrap();
    let mut create = json::Object::new();
    create.insert("type", "BTPS_DOC");
    create.insert("document", invoice.clone());
    create.insert("to", BILLING);
    let response = agent
        .command(AgentAction::DraftCreate, Some(Value::Object(create)))
        .await
        .unwrap();
    let document = response.raw.get("document").unwrap().as_object().unwrap();
    let result = document.get("results").unwrap().as_array().unwrap()[0]
        .as_object()
        .unwrap()
        .clone();
    let draft = result.get("artifact").unwrap().as_object().unwrap().clone();
    let draft_id = draft.str("id").unwrap().to_owned();
    assert_eq!(draft.str("type"), Some("BTPS_DOC"));
    assert_eq!(draft.str("to"), Some(BILLING));
    assert!(uuid::Uuid::parse_str(&draft_id).is_ok());
    // Listed, and found by its title.
    let drafts = agent
        .fetch(
            Mailbox::Draft,
            &Query::new().filter("title", "like", "inv-9"),
        )
        .await
        .unwrap();
    assert_eq!(drafts.artifact_ids(), std::slice::from_ref(&draft_id));

    // A document of another type than the draft's is refused; the right one replaces it.
    let mut wrong = json::Object::new();
    wrong.insert("id", draft_id.as_str());
    wrong.insert(
        "document",
        json::parse(crate::util::server::TRUST_REQUEST).unwrap(),
    );
    let (message, _) = refusal(
        agent
            .command(AgentAction::DraftUpdate, Some(Value::Object(wrong)))
            .await,
    );
    assert_eq!(message, "BTPS artifact validation failed");
    let mut update = json::Object::new();
    update.insert("id", draft_id.as_str());
    update.insert(
        "document",
        json::parse(&crate::util::server::invoice("INV-10")).unwrap(),
    );
    agent
        .command(AgentAction::DraftUpdate, Some(Value::Object(update)))
        .await
        .unwrap();
    let drafts = agent.fetch(Mailbox::Draft, &Query::new()).await.unwrap();
    assert_eq!(drafts.total, Some(1));
    let stored = drafts.results[0]
        .as_object()
        .unwrap()
        .get("artifact")
        .unwrap()
        .as_object()
        .unwrap()
        .clone();
    assert_eq!(
        stored
            .get("document")
            .unwrap()
            .as_object()
            .unwrap()
            .str("id"),
        Some("INV-10")
    );
    // An unknown draft is refused.
    let mut unknown = json::Object::new();
    unknown.insert("id", "no-such-draft");
    unknown.insert("document", invoice.clone());
    let (_, reason) = refusal(
        agent
            .command(AgentAction::DraftUpdate, Some(Value::Object(unknown)))
            .await,
    );
    assert_eq!(reason.as_deref(), Some("unknown draft"));
    // A create whose document does not fit its type is refused.
    let mut mismatched = json::Object::new();
    mismatched.insert("type", "TRUST_RES");
    mismatched.insert("document", invoice);
    refusal(
        agent
            .command(AgentAction::DraftCreate, Some(Value::Object(mismatched)))
            .await,
    );

    // Delete: to the trash.
    let done = agent.delete(Mailbox::Draft, &[&draft_id]).await.unwrap();
    assert_eq!(done.updated, std::slice::from_ref(&draft_id));
    let trash = agent.fetch(Mailbox::Trash, &Query::new()).await.unwrap();
    assert_eq!(trash.artifact_ids(), [draft_id]);
    server.stop().await;
}
