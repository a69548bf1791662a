//! Hot-path throughput of `SqliteStore` vs wacore's `InMemoryBackend`, and
//! bytes written to disk per 1000 operations (SD-card wear).
//!
//! Run: `CARGO_TARGET_DIR=target-store cargo bench -p outlet-store --bench store_ops`
//! Environment: `BENCH_OPS` (operations per workload, default 4000),
//! `BENCH_DIR` (where the database lives; default: cargo's target tmpdir —
//! put it on the device you care about, not on tmpfs, or the byte counts are 0).
//!
//! Each workload is a sequence of awaited calls from one task (the library's
//! pattern on a message), except "concurrent" (8 tasks at once, which is
//! where group commit shows). Bytes come from `/proc/self/io` of this process
//! (the store's thread is part of it): `write_bytes` is what reached the block
//! layer (page cache pages dirtied), `wchar` is what SQLite handed to write().
//! Every SQLite workload ends with `flush()` (a WAL checkpoint), so the cost
//! of copying WAL frames into the database is included.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use outlet_store::{DataDir, SqliteStore};
use wacore::store::InMemoryBackend;
use wacore::store::traits::Backend;

const PEERS: usize = 200;
const GROUPS: usize = 20;

#[derive(Default, Clone, Copy)]
struct Io {
    wchar: u64,
    write_bytes: u64,
}

fn io() -> Io {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Io {
        wchar: field("wchar:"),
        write_bytes: field("write_bytes:"),
    }
}

fn addr(i: usize) -> String {
    format!("62812{:07}:{}@s.whatsapp.net", i % PEERS, i % 3)
}

fn session(i: usize) -> Vec<u8> {
    // A Signal session record with a few previous states is 1-3 KB.
    (0..1800).map(|k| (k ^ i) as u8).collect()
}

fn sender_key(i: usize) -> Vec<u8> {
    (0..600).map(|k| ((k * 7) ^ i) as u8).collect()
}

struct Row {
    name: &'static str,
    ops: usize,
    mem: Duration,
    sql: Duration,
    io: Io,
}

async fn timed<F, Fut>(ops: usize, mut f: F) -> Duration
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    for i in 0..ops {
        f(i).await;
    }
    start.elapsed()
}

/// Run one workload on a backend; returns elapsed time.
async fn workload(name: &str, b: Arc<dyn Backend>, n: usize) -> Duration {
    match name {
        "session store" => {
            timed(n, |i| {
                let b = b.clone();
                async move { b.put_session(&addr(i), &session(i)).await.unwrap() }
            })
            .await
        }
        "session load" => {
            timed(n, |i| {
                let b = b.clone();
                async move {
                    assert!(b.get_session(&addr(i)).await.unwrap().is_some());
                }
            })
            .await
        }
        "session store, batches of 16" => {
            let start = Instant::now();
            for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
                let batch: Vec<(Arc<str>, Bytes)> = chunk
                    .iter()
                    .map(|&i| (Arc::from(addr(i + 7).as_str()), Bytes::from(session(i))))
                    .collect();
                b.put_sessions_batch(&batch).await.unwrap();
            }
            start.elapsed()
        }
        "session store, 8 concurrent tasks" => {
            let start = Instant::now();
            let tasks: Vec<_> = (0..8)
                .map(|t| {
                    let b = b.clone();
                    tokio::spawn(async move {
                        for i in (t..n).step_by(8) {
                            b.put_session(&addr(i + 13), &session(i)).await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            start.elapsed()
        }
        "identity put" => {
            timed(n, |i| {
                let b = b.clone();
                async move { b.put_identity(&addr(i), [i as u8; 32]).await.unwrap() }
            })
            .await
        }
        "identity load" => {
            timed(n, |i| {
                let b = b.clone();
                async move {
                    assert!(b.load_identity(&addr(i)).await.unwrap().is_some());
                }
            })
            .await
        }
        "pre-key store, batches of 812" => {
            // Pre-keys are generated and stored in upload-sized batches.
            let keys: Vec<(u32, Bytes)> = (1..=n as u32)
                .map(|id| (id, Bytes::from(vec![id as u8; 120])))
                .collect();
            let start = Instant::now();
            for chunk in keys.chunks(812) {
                b.store_prekeys_batch(chunk, false).await.unwrap();
            }
            start.elapsed()
        }
        "pre-key fetch + remove" => {
            // Each incoming pkmsg loads its one-time pre-key and consumes it.
            timed(n, |i| {
                let b = b.clone();
                async move {
                    let id = i as u32 + 1;
                    assert!(b.load_prekey(id).await.unwrap().is_some());
                    b.remove_prekey(id).await.unwrap();
                }
            })
            .await
        }
        "sender key put" => {
            timed(n, |i| {
                let b = b.clone();
                async move {
                    let a = format!("g{}@g.us::{}", i % GROUPS, addr(i));
                    b.put_sender_key(&a, &sender_key(i)).await.unwrap()
                }
            })
            .await
        }
        "sender key get" => {
            timed(n, |i| {
                let b = b.clone();
                async move {
                    let a = format!("g{}@g.us::{}", i % GROUPS, addr(i));
                    assert!(b.get_sender_key(&a).await.unwrap().is_some());
                }
            })
            .await
        }
        "paired device save (synchronous=FULL)" => {
            let mut device = wacore::store::Device::new();
            device.pn = Some("6281234567890:12@s.whatsapp.net".parse().unwrap());
            let start = Instant::now();
            for i in 0..n {
                device.login_counter = i as i32;
                b.save(&device).await.unwrap();
            }
            start.elapsed()
        }
        other => panic!("unknown workload {other}"),
    }
}

const WORKLOADS: &[&str] = &[
    "session store",
    "session load",
    "session store, batches of 16",
    "session store, 8 concurrent tasks",
    "identity put",
    "identity load",
    "pre-key store, batches of 812",
    "pre-key fetch + remove",
    "sender key put",
    "sender key get",
    "paired device save (synchronous=FULL)",
];

/// fsync-bound workloads run fewer operations.
fn ops_for(name: &str, n: usize) -> usize {
    if name.contains("FULL") {
        (n / 20).max(10)
    } else {
        n
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would too, but
    // with no `--bench` flag it only checks that the binary starts.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: usize = std::env::var("BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let base = std::env::var("BENCH_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").into());
    std::fs::create_dir_all(&base).unwrap();
    let tmp = tempfile::tempdir_in(&base).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let rows = rt.block_on(async {
        let mem: Arc<dyn Backend> = Arc::new(InMemoryBackend::new());
        let lock = DataDir::lock(tmp.path()).unwrap();
        let (store, _) = SqliteStore::open(&lock).await.unwrap();
        let store = Arc::new(store);
        let sql: Arc<dyn Backend> = store.clone();
        let mut rows = Vec::new();
        for name in WORKLOADS {
            let n = ops_for(name, n);
            let mem_t = workload(name, mem.clone(), n).await;
            store.flush().await.unwrap();
            let before = io();
            let sql_t = workload(name, sql.clone(), n).await;
            store.flush().await.unwrap();
            let after = io();
            rows.push(Row {
                name,
                ops: n,
                mem: mem_t,
                sql: sql_t,
                io: Io {
                    wchar: after.wchar - before.wchar,
                    write_bytes: after.write_bytes - before.write_bytes,
                },
            });
        }
        store.close().await.unwrap();
        rows
    });

    let size = std::fs::metadata(tmp.path().join("session.db")).map_or(0, |m| m.len());
    println!(
        "ops per workload: {n} (FULL-sync workload: {}); database after run: {} KiB",
        ops_for("FULL", n),
        size / 1024
    );
    println!();
    println!(
        "| workload | InMemoryBackend ops/s | SqliteStore ops/s | SqliteStore µs/op | write_bytes per 1000 ops | wchar per 1000 ops |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let per_s = |d: Duration| r.ops as f64 / d.as_secs_f64();
        let per_k = |b: u64| b as f64 * 1000.0 / r.ops as f64 / 1024.0;
        println!(
            "| {} | {:.0} | {:.0} | {:.1} | {:.0} KiB | {:.0} KiB |",
            r.name,
            per_s(r.mem),
            per_s(r.sql),
            r.sql.as_secs_f64() * 1e6 / r.ops as f64,
            per_k(r.io.write_bytes),
            per_k(r.io.wchar),
        );
    }
}
