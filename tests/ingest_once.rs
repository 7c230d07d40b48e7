//! Reported usage counted exactly once (issue 40, item 5): a batch sent
//! again with the same `Idempotency-Key` - its answer lost, or sent to
//! several instances at once - and records whose `id` was sent before
//! count once, on sled and on PostgreSQL shared by two instances; a batch
//! the store could not take is counted when it is sent again (never zero
//! times). Real servers on real sockets; the counts are read back from
//! the billing API (the live counters) and the export (the stored records).

mod common;
#[path = "common/postgres.rs"]
mod postgres;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use common::{wait_until, TestServer, ADMIN};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use tollgate::app::RunningServer;
use tollgate::clock::SystemClock;

/// `POST /api/v1/usage` at `base`: status, body, and whether the answer
/// says it replays an earlier sending.
fn send(c: &Client, base: &str, key: &str, idem: Option<&str>, body: &Value) -> (u16, Value, bool) {
    let mut r = c
        .post(format!("{base}/api/v1/usage"))
        .bearer_auth(key)
        .json(body);
    if let Some(k) = idem {
        r = r.header("Idempotency-Key", k);
    }
    let r = r.send().unwrap();
    let replayed = r.headers().get("idempotent-replayed").is_some();
    (
        r.status().as_u16(),
        r.json().unwrap_or(Value::Null),
        replayed,
    )
}

/// `body` sent with the key `idem` to each of `bases` at once, one client
/// and thread each: their answers.
fn at_once<B: AsRef<str> + Sync>(
    bases: &[B],
    key: &str,
    idem: &str,
    body: &Value,
) -> Vec<(u16, Value, bool)> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = bases
            .iter()
            .map(|b| scope.spawn(move || send(&Client::new(), b.as_ref(), key, Some(idem), body)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Calls the billing API counts this month (the live counters).
fn billed(c: &Client, base: &str, key: &str) -> u64 {
    let v: Value = c
        .get(format!("{base}/api/billing/usage"))
        .bearer_auth(key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["calls"]["used"].as_u64().unwrap()
}

/// Records the export holds (the store).
fn stored(c: &Client, base: &str, key: &str) -> usize {
    let text = c
        .get(format!(
            "{base}/api/billing/api-usage/export?format=ndjson&from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z"
        ))
        .bearer_auth(key)
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines().filter(|l| !l.trim().is_empty()).count()
}

fn batch(n: usize, tag: &str) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"endpoint": format!("/v1/{tag}/{i}"), "calls": 1}))
            .collect(),
    )
}

#[test]
fn a_batch_sent_again_with_its_key_counts_once() {
    let s = TestServer::start();
    let key = s.tenant_with_key("acme", "enterprise");
    let (c, base) = (&s.http, s.url(""));
    let base = base.trim_end_matches('/');
    let (status, body, replayed) = send(c, base, &key, Some("k-1"), &batch(3, "a"));
    assert_eq!((status, replayed), (202, false), "{body}");
    assert_eq!(body, json!({"accepted": 3, "dropped": 0, "duplicates": 0}));
    // Sent again: the same answer, marked as a replay; nothing counted.
    for _ in 0..3 {
        let (status, again, replayed) = send(c, base, &key, Some("k-1"), &batch(3, "a"));
        assert_eq!((status, replayed), (202, true));
        assert_eq!(again, body, "a repeat is answered as the first sending was");
    }
    assert_eq!(billed(c, base, &key), 3);
    assert_eq!(stored(c, base, &key), 3);
    // Another key is another batch; no key at all is never deduplicated.
    assert_eq!(
        send(c, base, &key, Some("k-2"), &batch(3, "a")).1["accepted"],
        3
    );
    assert_eq!(send(c, base, &key, None, &batch(2, "b")).1["accepted"], 2);
    assert_eq!(send(c, base, &key, None, &batch(2, "b")).1["accepted"], 2);
    assert_eq!(billed(c, base, &key), 10);
    // (The batches without a key went through the queue.)
    wait_until(|| stored(c, base, &key) == 10);
    // Keys are per tenant: another tenant's k-1 is its own.
    let other = s.tenant_with_key("globex", "enterprise");
    assert_eq!(
        send(c, base, &other, Some("k-1"), &batch(3, "a")).1["accepted"],
        3
    );
    assert_eq!(billed(c, base, &other), 3);
    // A key that is not one is refused before anything is taken.
    let long = "x".repeat(256);
    for bad in [long.as_str(), "tab\there"] {
        let (status, body, _) = send(c, base, &key, Some(bad), &batch(1, "c"));
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["code"], "invalid_idempotency_key");
    }
    assert_eq!(billed(c, base, &key), 10);
    let metrics = s.metrics();
    assert!(
        metrics.contains("tollgate_records_duplicate_total 9")
            || metrics.contains("tollgate_records_duplicate 9"),
        "three repeats of three records: {}",
        metrics
            .lines()
            .filter(|l| l.contains("duplicate"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn a_record_id_seen_before_is_a_duplicate_within_and_across_batches() {
    let s = TestServer::start();
    let key = s.tenant_with_key("acme", "enterprise");
    let (c, base) = (&s.http, s.url(""));
    let base = base.trim_end_matches('/');
    let rec = |id: &str| json!({"id": id, "endpoint": "/v1/chat", "calls": 2, "tokensUsed": 10});
    let (status, body, _) = send(c, base, &key, None, &json!([rec("a"), rec("b"), rec("a")]));
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"accepted": 2, "dropped": 0, "duplicates": 1}));
    let (_, body, replayed) = send(c, base, &key, None, &json!([rec("b"), rec("c")]));
    assert_eq!(body, json!({"accepted": 1, "dropped": 0, "duplicates": 1}));
    assert!(!replayed, "no key: nothing to replay");
    // One record, not an array.
    assert_eq!(send(c, base, &key, None, &rec("c")).1["duplicates"], 1);
    assert_eq!(billed(c, base, &key), 6, "a, b and c, 2 calls each");
    assert_eq!(stored(c, base, &key), 3);
    // A keyed batch that reuses an id of another batch: that record is a
    // duplicate, on the first sending and on its repeat alike.
    let first = send(c, base, &key, Some("k"), &json!([rec("a"), rec("d")]));
    assert_eq!(
        first.1,
        json!({"accepted": 1, "dropped": 0, "duplicates": 1})
    );
    let again = send(c, base, &key, Some("k"), &json!([rec("a"), rec("d")]));
    assert_eq!(again.1, first.1);
    assert!(again.2);
    assert_eq!(billed(c, base, &key), 8);
    // A bad id refuses the whole batch, naming the record.
    for bad in [json!(""), json!("x".repeat(256)), json!("a\u{1}b")] {
        let (status, body, _) = send(
            c,
            base,
            &key,
            None,
            &json!([rec("e"), {"id": bad, "endpoint": "/x"}]),
        );
        assert_eq!(status, 422, "{body}");
        assert!(body["error"].as_str().unwrap().contains("[1]"), "{body}");
    }
    assert_eq!(billed(c, base, &key), 8);
    // Claims outlive a restart.
    let mut s = s;
    s.restart_with(|_| {}, Arc::new(SystemClock));
    let base = s.url("");
    let base = base.trim_end_matches('/');
    let (_, body, _) = send(
        &s.http,
        base,
        &key,
        None,
        &json!([rec("a"), rec("b"), rec("e")]),
    );
    assert_eq!(body, json!({"accepted": 1, "dropped": 0, "duplicates": 2}));
    assert_eq!(stored(&s.http, base, &key), 5);
}

/// The case a retry exists for: the batch is taken, and its answer never
/// reaches the client (the connection is gone). Sent again - after a
/// restart too -, it counts once.
#[test]
fn an_answer_lost_then_the_batch_resent_counts_once() {
    let s = TestServer::start();
    let key = s.tenant_with_key("acme", "enterprise");
    let base = s.url("");
    let base = base.trim_end_matches('/').to_string();
    let body = batch(4, "lost").to_string();
    let addr = base.trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "POST /api/v1/usage HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nIdempotency-Key: lost-1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // The server took it (the store holds it); the client hangs up
    // without reading the answer.
    wait_until(|| stored(&s.http, &base, &key) == 4);
    conn.shutdown(std::net::Shutdown::Both).unwrap();
    drop(conn);
    let (status, answer, replayed) = send(&s.http, &base, &key, Some("lost-1"), &batch(4, "lost"));
    assert_eq!((status, replayed), (202, true));
    assert_eq!(
        answer,
        json!({"accepted": 4, "dropped": 0, "duplicates": 0})
    );
    assert_eq!(billed(&s.http, &base, &key), 4);
    let mut s = s;
    s.restart_with(|_| {}, Arc::new(SystemClock));
    let base = s.url("");
    let base = base.trim_end_matches('/');
    assert!(send(&s.http, base, &key, Some("lost-1"), &batch(4, "lost")).2);
    assert_eq!(billed(&s.http, base, &key), 4);
    assert_eq!(stored(&s.http, base, &key), 4);
}

#[test]
fn one_batch_from_many_clients_at_once_counts_once() {
    let s = TestServer::start();
    let key = s.tenant_with_key("acme", "enterprise");
    let base = s.url("");
    let base = base.trim_end_matches('/');
    for round in 0..5 {
        let idem = format!("burst-{round}");
        let bases = vec![base; 12];
        let answers = at_once(&bases, &key, &idem, &batch(5, "burst"));
        for (status, body, _) in &answers {
            assert_eq!(*status, 202, "{body}");
            assert_eq!(body["accepted"], 5);
        }
        assert_eq!(
            answers.iter().filter(|a| !a.2).count(),
            1,
            "one sending took it, the others replayed it"
        );
    }
    assert_eq!(billed(&s.http, base, &key), 25);
    assert_eq!(stored(&s.http, base, &key), 25);
}

/// Two instances on one PostgreSQL: the same batch sent to both at once
/// is stored, billed and counted once; while the database is down a
/// claimed batch is refused (503) - nothing is taken - and sent again
/// once it is back, it counts once.
#[test]
fn the_same_batch_to_two_instances_on_postgres_counts_once() {
    let db = postgres::own_cluster();
    let url = db.fresh_database();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let servers: Vec<RunningServer> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut c = common::config(d.path());
            c.store.engine = tollgate::config::EngineKind::Postgres;
            c.store.postgres_url = url.clone();
            c.store.instance = format!("once-{i}");
            c.store.postgres_timeout_ms = 2_000;
            RunningServer::start(c, ADMIN, Arc::new(SystemClock)).unwrap()
        })
        .collect();
    let c = Client::new();
    let bases: Vec<String> = servers
        .iter()
        .map(|s| s.url("").trim_end_matches('/').to_string())
        .collect();
    let r = c
        .post(format!("{}/api/admin/tenants", bases[0]))
        .bearer_auth(ADMIN)
        .json(&json!({"id": "acme", "planId": "enterprise"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let key: Value = c
        .post(format!("{}/api/admin/tenants/acme/keys", bases[0]))
        .bearer_auth(ADMIN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let key = key["key"].as_str().unwrap().to_string();
    wait_until(|| {
        c.get(format!("{}/api/billing/usage", bases[1]))
            .bearer_auth(&key)
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    let rounds = 10;
    for round in 0..rounds {
        let idem = format!("twice-{round}");
        let answers = at_once(&bases, &key, &idem, &batch(3, "twice"));
        for (status, body, _) in &answers {
            assert_eq!(*status, 202, "{body}");
            assert_eq!(body["accepted"], 3);
        }
        assert_eq!(answers.iter().filter(|a| !a.2).count(), 1, "round {round}");
    }
    for b in &bases {
        assert_eq!(
            stored(&c, b, &key),
            3 * rounds,
            "stored once, read from {b}"
        );
    }
    // The two instances' live counts add up to what was stored.
    let live: u64 = bases.iter().map(|b| billed(&c, b, &key)).sum::<u64>();
    let each_reads_the_total = bases
        .iter()
        .all(|b| billed(&c, b, &key) == 3 * rounds as u64);
    assert!(
        each_reads_the_total || live == 3 * rounds as u64,
        "billed {live} across the instances for {} stored",
        3 * rounds
    );

    // The database goes away: a claimed batch is refused, nothing taken.
    db.stop();
    let (status, body, _) = send(&c, &bases[0], &key, Some("outage"), &batch(2, "outage"));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "store_unavailable");
    db.start().unwrap();
    // Sent again once it is back: counted once - not zero times.
    wait_until(|| send(&c, &bases[1], &key, Some("outage"), &batch(2, "outage")).0 == 202);
    let (_, body, replayed) = send(&c, &bases[0], &key, Some("outage"), &batch(2, "outage"));
    assert!(replayed, "{body}");
    assert_eq!(body["accepted"], 2);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(stored(&c, &bases[0], &key), 3 * rounds + 2);
}
