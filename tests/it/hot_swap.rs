//! Hot swap under load: `CREATE OR REPLACE FUNCTION` while a query streams through the function.
//! Every event is processed exactly once by exactly one version, versions change only between
//! batches, and they change in the order the swaps happened.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use eddy_sql::{Output, Session};
use futures::StreamExt;
use tokio::sync::Mutex;

const EVENTS: usize = 200_000;
const BATCH_SIZE: usize = 256;
const SWAPS: usize = 20;

pub(crate) fn tag_component(version: u8) -> PathBuf {
    eddy_tests::component(&format!("tag_v{version}"))
}

fn replace_with(path: &std::path::Path) -> String {
    format!("CREATE OR REPLACE FUNCTION tag FROM '{}'", path.display())
}

/// Checks every row is tagged `v<n>:<its event id>` by one version `n`, and returns `n`.
pub(crate) fn batch_version(batch: &RecordBatch, seen: &mut [u32]) -> u8 {
    let ids = batch.column(0).as_primitive::<Int64Type>();
    let tags = batch.column(1).as_string::<i32>();
    assert_eq!(tags.null_count(), 0);
    let version_of = |row: usize| -> u8 {
        let tag = tags.value(row);
        let id = ids.value(row);
        let (version, number) = tag
            .strip_prefix('v')
            .and_then(|t| t.split_once(':'))
            .unwrap_or_else(|| panic!("malformed tag {tag:?}"));
        assert_eq!(number, id.to_string(), "the tag of event {id}");
        version.parse().unwrap()
    };
    let version = version_of(0);
    for row in 0..batch.num_rows() {
        assert_eq!(
            version_of(row),
            version,
            "a batch is served by one version: row {row} of {}",
            batch.num_rows()
        );
        seen[ids.value(row) as usize] += 1;
    }
    version
}

/// A swap as the swapping task saw it: batches the reader had received before it began and
/// after it completed.
#[derive(Debug)]
pub(crate) struct Swap {
    pub(crate) version: u8,
    pub(crate) before: usize,
    pub(crate) after: usize,
}

/// Checks the batch versions against the swap log.
///
/// Batch `j` ran on the slot's state after `s(j)` swaps, `s` nondecreasing. Swap `k` cannot
/// have reached a batch received before it began (`j < before`), and must have reached every
/// batch requested after it completed (`j > after`): so `s(j)` lies between the swaps certainly
/// done and those possibly begun. State `s` serves v1 when even, v2 when odd. Returns the batch
/// indices where the version changed.
pub(crate) fn check_against_swaps(versions: &[u8], swaps: &[Swap]) -> Vec<usize> {
    for (k, swap) in swaps.iter().enumerate() {
        assert_eq!(swap.version, if k % 2 == 0 { 2 } else { 1 }, "{swaps:?}");
    }
    let mut state = 0;
    let mut changes = Vec::new();
    for (j, &version) in versions.iter().enumerate() {
        let done = swaps.iter().filter(|s| s.after < j).count();
        let begun = swaps.iter().filter(|s| s.before <= j).count();
        let wanted = usize::from(version == 2);
        let mut next = state.max(done);
        if next % 2 != wanted {
            next += 1;
        }
        assert!(
            next <= begun,
            "batch {j} ran on v{version}, which no swap in progress could have installed \
             (swaps done {done}, begun {begun}, state before {state}): {swaps:?}"
        );
        if j > 0 && versions[j - 1] != version {
            changes.push(j);
        }
        state = next;
    }
    changes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_land_at_batch_boundaries_of_a_running_query() {
    let garbage = std::env::temp_dir().join(format!("eddy-hot-swap-{}.wasm", std::process::id()));
    std::fs::write(&garbage, b"not a component at all").unwrap();
    let session = Arc::new(Mutex::new(eddy_tests::session()));
    {
        let mut s = session.lock().await;
        s.execute(&replace_with(&tag_component(1))).await.unwrap();
        s.execute(&format!(
            "SET datafusion.execution.batch_size = {BATCH_SIZE}"
        ))
        .await
        .unwrap();
        // One partition: batches reach the reader in the order they were computed.
        s.execute("SET datafusion.execution.target_partitions = 1")
            .await
            .unwrap();
    }
    let mut stream = session
        .lock()
        .await
        .execute_stream(&format!(
            "SELECT event_id, tag(event_id) FROM car_sensor({EVENTS}, 1)"
        ))
        .await
        .unwrap();

    let received = Arc::new(AtomicUsize::new(0));
    let swapping = Arc::new(AtomicBool::new(true));
    let swapper = tokio::spawn({
        let session = session.clone();
        let received = received.clone();
        let swapping = swapping.clone();
        let garbage = garbage.clone();
        async move {
            let mut swaps = Vec::new();
            for k in 0..SWAPS {
                tokio::time::sleep(Duration::from_millis(15)).await;
                let version = if k % 2 == 0 { 2 } else { 1 };
                let before = received.load(Ordering::SeqCst);
                session
                    .lock()
                    .await
                    .execute(&replace_with(&tag_component(version)))
                    .await
                    .unwrap();
                let after = received.load(Ordering::SeqCst);
                swaps.push(Swap {
                    version,
                    before,
                    after,
                });
                // A broken replacement in between changes nothing; the version check below
                // would see a batch served by anything else.
                let err = session
                    .lock()
                    .await
                    .execute(&replace_with(&garbage))
                    .await
                    .unwrap_err()
                    .to_string();
                assert!(
                    err.starts_with(&format!(
                        "{} is not a valid WebAssembly component",
                        garbage.display()
                    )),
                    "{err}"
                );
            }
            swapping.store(false, Ordering::SeqCst);
            swaps
        }
    });

    let mut seen = vec![0u32; EVENTS];
    let mut versions = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.unwrap();
        assert!(batch.num_rows() <= BATCH_SIZE);
        versions.push(batch_version(&batch, &mut seen));
        received.fetch_add(1, Ordering::SeqCst);
        // A slow consumer, as a sink would be, so the swaps meet the query mid-stream.
        if swapping.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let swaps = swapper.await.unwrap();
    std::fs::remove_file(&garbage).unwrap();

    let missing: Vec<usize> = (0..EVENTS).filter(|&id| seen[id] == 0).collect();
    let repeated: Vec<usize> = (0..EVENTS).filter(|&id| seen[id] > 1).collect();
    assert!(
        missing.is_empty() && repeated.is_empty(),
        "{} events missing (first {:?}), {} seen twice or more (first {:?})",
        missing.len(),
        missing.first(),
        repeated.len(),
        repeated.first()
    );
    assert_eq!(versions.len(), EVENTS.div_ceil(BATCH_SIZE));
    assert_eq!(
        versions[0], 1,
        "the query starts on the version it was planned with"
    );

    let changes = check_against_swaps(&versions, &swaps);
    let mid_stream = swaps
        .iter()
        .filter(|s| s.after + 1 < versions.len())
        .count();
    eprintln!(
        "{} batches, {SWAPS} swaps, {mid_stream} completed mid-stream, version changed at \
         batches {changes:?}",
        versions.len()
    );
    assert!(
        changes.len() >= 2,
        "at least two swaps must land inside the query: {swaps:?}"
    );
}

pub(crate) async fn tags(session: &mut Session, sql: &str) -> Vec<String> {
    match session.execute(sql).await.unwrap() {
        Output::Rows { batches, .. } => batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_string::<i32>()
                    .iter()
                    .map(|t| t.unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect(),
        Output::Message(m) => panic!("expected rows, got {m:?}"),
    }
}

async fn version_of_tag(session: &mut Session) -> String {
    match session.execute("DESCRIBE FUNCTION tag").await.unwrap() {
        Output::Rows { batches, .. } => {
            let b = &batches[0];
            let keys = b.column(0).as_string::<i32>();
            let row = (0..b.num_rows())
                .find(|&i| keys.value(i) == "version")
                .unwrap();
            b.column(1).as_string::<i32>().value(row).to_string()
        }
        Output::Message(m) => panic!("expected rows, got {m:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_replacement_leaves_the_old_version_serving() {
    let garbage = std::env::temp_dir().join(format!("eddy-bad-tag-{}.wasm", std::process::id()));
    std::fs::write(&garbage, b"\0asm garbage").unwrap();
    let evil = eddy_tests::component("evil");
    let mut session = eddy_tests::session();
    let query = "SELECT tag(event_id) FROM car_sensor(3, 1)";

    for (version, expected) in [(1, ["v1:0", "v1:1", "v1:2"]), (2, ["v2:0", "v2:1", "v2:2"])] {
        session
            .execute(&replace_with(&tag_component(version)))
            .await
            .unwrap();
        assert_eq!(tags(&mut session, query).await, expected);
        let serving = version_of_tag(&mut session).await;

        let err = eddy_tests::error(&mut session, &replace_with(&garbage)).await;
        assert!(
            err.starts_with(&format!(
                "{} is not a valid WebAssembly component",
                garbage.display()
            )),
            "{err}"
        );
        let err = eddy_tests::error(&mut session, &replace_with(&evil)).await;
        assert_eq!(
            err,
            format!(
                "{} does not provide a function named 'tag'; it provides: panic_if_negative, \
                 spin, hog, chatty, recurse, noisy, read_passwd, env_count, connect_tcp, \
                 wall_clock_ms, sleepy",
                evil.display()
            )
        );

        assert_eq!(tags(&mut session, query).await, expected);
        assert_eq!(version_of_tag(&mut session).await, serving);
    }
    std::fs::remove_file(&garbage).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_reach_a_continuous_query_without_losing_or_repeating_events() {
    const N: usize = 60_000;
    let mut engine =
        eddy_stream::Engine::new(eddy_tests::session(), eddy_stream::EngineConfig::default());
    engine
        .execute(&replace_with(&tag_component(1)))
        .await
        .unwrap();
    engine
        .execute(&format!(
            "CREATE STREAM g WITH (generator='car_sensor', rate=30000, seed=3, max_events={N})"
        ))
        .await
        .unwrap();
    engine
        .execute("CREATE STREAM tagged AS SELECT event_id, tag(event_id) AS t FROM g")
        .await
        .unwrap();
    // Swap back and forth while events flow.
    let mut swaps = 0;
    while engine.queries()[0].events_in < N as u64 {
        tokio::time::sleep(Duration::from_millis(80)).await;
        let version = if swaps % 2 == 0 { 2 } else { 1 };
        engine
            .execute(&replace_with(&tag_component(version)))
            .await
            .unwrap();
        swaps += 1;
    }
    // All of them written out before the pull query reads (its own wait is bounded by 10 s,
    // which a loaded CI machine can overrun).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while engine.queries()[0].rows_out < N as u64 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Event ids rise in the order the query processed them.
    let batches = match engine
        .execute("SELECT event_id, t FROM tagged ORDER BY event_id")
        .await
        .unwrap()
    {
        eddy_stream::Output::Rows { batches, .. } => batches,
        _ => unreachable!(),
    };
    let mut seen = vec![0u32; N];
    let mut versions = Vec::new();
    for batch in &batches {
        for row in 0..batch.num_rows() {
            versions.push(batch_version(&batch.slice(row, 1), &mut seen));
        }
    }
    let missing: Vec<usize> = (0..N).filter(|&i| seen[i] == 0).collect();
    let repeated: Vec<usize> = (0..N).filter(|&i| seen[i] > 1).collect();
    assert!(
        missing.is_empty() && repeated.is_empty(),
        "every event exactly once: {} missing (first {:?}), {} repeated (first {:?}), of {} rows",
        missing.len(),
        &missing[..missing.len().min(5)],
        repeated.len(),
        &repeated[..repeated.len().min(5)],
        versions.len()
    );
    // Each swap changes the version at most once, between two events.
    let changes = versions.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(swaps >= 3, "the stream outlived only {swaps} swaps");
    assert!(
        (1..=swaps).contains(&changes),
        "{changes} version changes for {swaps} swaps"
    );
    assert_eq!(versions[0], 1);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_directory_loads_settled_files_and_keeps_serving_through_bad_ones() {
    let dir = std::env::temp_dir().join(eddy_tests::kafka::unique("eddy-udf-dir"));
    std::fs::create_dir_all(&dir).unwrap();
    let v1 = std::fs::read(tag_component(1)).unwrap();
    let v2 = std::fs::read(tag_component(2)).unwrap();
    std::fs::write(dir.join("tag.wasm"), &v1).unwrap();
    // Neither a component file name nor a function name: ignored.
    std::fs::write(dir.join("README.txt"), "not a component").unwrap();
    std::fs::write(dir.join("9lives.wasm"), &v1).unwrap();
    let mut session = eddy_tests::session();
    let mut watched = eddy_sql::UdfDir::new(&dir);
    let query = "SELECT tag(event_id) FROM car_sensor(2, 1)";
    let loaded = |loads: Vec<eddy_sql::DirLoad>| -> Vec<(String, Result<String, String>)> {
        loads
            .into_iter()
            .map(|l| {
                let file = l.path.file_name().unwrap().to_string_lossy().into_owned();
                (file, l.result)
            })
            .collect()
    };

    // The first sync loads what is there at once.
    let first = loaded(watched.sync(&mut session).await.unwrap());
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].0, "tag.wasm");
    assert!(first[0].1.is_ok(), "{first:?}");
    assert_eq!(tags(&mut session, query).await, ["v1:0", "v1:1"]);
    assert!(watched.sync(&mut session).await.unwrap().is_empty());

    // A changed file waits one sync (it may still be being written), then replaces v1.
    std::fs::write(dir.join("tag.wasm"), &v2).unwrap();
    assert!(watched.sync(&mut session).await.unwrap().is_empty());
    assert_eq!(tags(&mut session, query).await, ["v1:0", "v1:1"]);
    let second = loaded(watched.sync(&mut session).await.unwrap());
    assert!(
        matches!(&second[..], [(f, Ok(_))] if f == "tag.wasm"),
        "{second:?}"
    );
    assert_eq!(tags(&mut session, query).await, ["v2:0", "v2:1"]);

    // A broken file is refused with the reason, v2 keeps serving, and it is not retried.
    std::fs::write(dir.join("tag.wasm"), b"\0asm half a component").unwrap();
    assert!(watched.sync(&mut session).await.unwrap().is_empty());
    let third = loaded(watched.sync(&mut session).await.unwrap());
    match &third[..] {
        [(f, Err(e))] if f == "tag.wasm" => {
            assert!(e.contains("is not a valid WebAssembly component"), "{e}")
        }
        other => panic!("expected one refusal, got {other:?}"),
    }
    assert_eq!(tags(&mut session, query).await, ["v2:0", "v2:1"]);
    assert!(watched.sync(&mut session).await.unwrap().is_empty());

    // The newest `tag.*.wasm` serves `tag` (uploads over HTTP are stored that way).
    std::fs::write(dir.join("tag.2.wasm"), &v1).unwrap();
    watched.sync(&mut session).await.unwrap();
    let fourth = loaded(watched.sync(&mut session).await.unwrap());
    assert!(
        matches!(&fourth[..], [(f, Ok(_))] if f == "tag.2.wasm"),
        "{fourth:?}"
    );
    assert_eq!(tags(&mut session, query).await, ["v1:0", "v1:1"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_version_counts_its_own_calls_across_swaps() {
    let mut session = eddy_tests::session();
    let query = "SELECT tag(event_id) FROM car_sensor(3, 1)";
    for (version, runs) in [(1, 2), (2, 1), (1, 1)] {
        session
            .execute(&replace_with(&tag_component(version)))
            .await
            .unwrap();
        for _ in 0..runs {
            assert_eq!(tags(&mut session, query).await.len(), 3);
        }
    }
    let tag = session.functions()["tag"].clone();
    let counted: Vec<(String, u64, u64)> = tag
        .version_stats()
        .iter()
        .map(|(component, stats)| {
            (
                component.source.clone(),
                stats.calls.load(Ordering::Relaxed),
                stats.rows.load(Ordering::Relaxed),
            )
        })
        .collect();
    let source = |v: u8| tag_component(v).display().to_string();
    // v2 was replaced by v1 coming back, which went on counting where it stopped.
    assert_eq!(counted, [(source(2), 1, 3), (source(1), 3, 9)]);
    assert_eq!(tag.stats().calls.load(Ordering::Relaxed), 3);
}
