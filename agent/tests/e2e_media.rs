//! Received files end to end: a fake contact sends real encrypted files
//! through the fake server's media host; the real agent fetches, spools and
//! publishes them in chunks; HQ's real `fleet media --save` puts them
//! together. Mosquitto in between.

mod common;
#[path = "common/hq.rs"]
mod hq;
#[path = "common/mqtt.rs"]
mod mqtt;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use fake_whatsapp::FakeServer;
use hq::*;
use mqtt::*;
use serde_json::{Value, json};

const BUDI: &str = "6281111111111";

/// An outlet linked with messages on, trusting the fake's media host.
async fn linked_with_media(
    server: &FakeServer,
    outlet: &Outlet,
) -> (tempfile::TempDir, Agent, Subscriber) {
    let (ca_dir, ca) = media_ca(server);
    let (agent, hq) = linked(
        server,
        outlet,
        &[("OUTLET_AGENT__WHATSAPP__MEDIA_CA_FILE", ca.as_str())],
    )
    .await;
    (ca_dir, agent, hq)
}

/// `outlet-agent fleet media --save DIR`, its stderr collected.
struct Saver {
    child: Child,
    stderr: Arc<Mutex<String>>,
    dir: PathBuf,
}

impl Saver {
    fn start(broker: &str, dir: &Path, client_id: &str) -> Saver {
        let mut command = agent_command(&[]);
        command
            .args([
                "fleet", "--broker", broker, "--prefix", "outlet", "media", "--save",
            ])
            .arg(dir)
            .args(["--client-id", client_id])
            .env_remove("OUTLET_AGENT_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("fleet media starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stderr.take().expect("stderr")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().expect("stdout")),
        ] {
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut all = sink.lock().unwrap();
                    all.push_str(&line);
                    all.push('\n');
                }
            });
        }
        Saver {
            child,
            stderr,
            dir: dir.to_path_buf(),
        }
    }

    fn output(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until `outlet/<sha>.<ext>` is saved; returns its bytes.
    async fn saved(&self, outlet: &str, sha: &str, ext: &str, agent: &Agent) -> Vec<u8> {
        let path = self.dir.join(outlet).join(format!("{sha}.{ext}"));
        let deadline = tokio::time::Instant::now() + WAIT * 3;
        loop {
            if let Ok(bytes) = std::fs::read(&path) {
                return bytes;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} not saved\nfleet media:\n{}\nagent:\n{}",
                path.display(),
                self.output(),
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Saver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_a_voice_note_and_a_pdf_reach_hq_whole() {
    let server = server().await;
    let outlet = Outlet::new("media", &shared_broker());
    let (_ca_dir, mut agent, mut hq) = linked_with_media(&server, &outlet).await;
    let save = tempfile::tempdir().expect("a temp dir");
    let saver = Saver::start(&outlet.broker, save.path(), &unique("hq-media"));

    let photo = file_bytes(300 * 1024, 1);
    let voice = file_bytes(40 * 1024, 2);
    let pdf = file_bytes(3 * 1024 * 1024, 3);
    let contacts = server.contacts();
    let photo_id = contacts
        .send_file(BUDI, "bukti-transfer.jpg", &photo, "Bukti transfer")
        .await
        .expect("Budi sends a photo");
    contacts
        .send_file(BUDI, "pesan.ogg", &voice, "")
        .await
        .expect("Budi sends a voice note");
    let pdf_id = contacts
        .send_file(BUDI, "order.pdf", &pdf, "Order bulan ini")
        .await
        .expect("Budi sends a PDF");

    // message/in says what arrived at once, with the file's metadata.
    let topic = outlet.topic("message/in");
    let record = hq
        .seen_or_wait("the photo's message/in", WAIT, |m| {
            m.topic == topic && m.json()["id"] == json!(photo_id)
        })
        .await
        .json();
    assert_eq!(record["kind"], "image");
    assert_eq!(record["caption"], "Bukti transfer");
    assert_eq!(record["media"]["sha256"], json!(sha_hex(&photo)));

    // HQ puts each together from the chunks, byte for byte.
    for (bytes, ext) in [(&photo, "jpg"), (&voice, "ogg"), (&pdf, "pdf")] {
        let got = saver.saved(&outlet.id, &sha_hex(bytes), ext, &agent).await;
        assert!(
            got == *bytes,
            "{ext}: {} bytes, not the {} sent",
            got.len(),
            bytes.len()
        );
    }
    let about: Value = serde_json::from_slice(
        &std::fs::read(
            save.path()
                .join(&outlet.id)
                .join(format!("{}.json", sha_hex(&pdf))),
        )
        .expect("the JSON beside the file"),
    )
    .expect("JSON");
    assert_eq!(about["id"], json!(pdf_id));
    assert_eq!(about["from"], format!("+{BUDI}"));
    assert_eq!(about["caption"], "Order bulan ini");
    assert_eq!(about["kind"], "document");

    // The announcements and chunks as HQ sees them on the broker.
    let media_topic = outlet.topic("message/media");
    let announced = hq
        .seen_or_wait("the PDF's announcement", WAIT, |m| {
            m.topic == media_topic && m.json()["id"] == json!(pdf_id)
        })
        .await
        .json();
    assert_eq!(announced["size"], json!(pdf.len()));
    assert_eq!(announced["sha256"], json!(sha_hex(&pdf)));
    assert_eq!(announced["mimetype"], "application/pdf");
    let chunk_size = announced["chunk_size"].as_u64().expect("chunk_size");
    assert!(chunk_size <= 256 * 1024, "{announced}");
    assert_eq!(
        announced["chunks"],
        json!((pdf.len() as u64).div_ceil(chunk_size))
    );

    // The health snapshot counts the files not yet at HQ: none now.
    agent
        .wait_for("no received file pending", |h| h["media_pending"] == 0)
        .await;

    // The spool keeps one copy per file, private to the agent.
    let spooled = agent.data_dir().join("media").join(sha_hex(&photo));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&spooled).expect("spooled").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // request/media publishes a spooled file again; an unknown one is refused.
    let again = hq
        .request(&outlet.prefix, "media", json!({"sha256": sha_hex(&voice)}))
        .await;
    assert_eq!(again["status"], "ok", "{again}");
    let unknown = hq
        .request(&outlet.prefix, "media", json!({"sha256": "0".repeat(64)}))
        .await;
    assert_eq!(unknown["status"], "error", "{unknown}");
    assert!(
        unknown["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not_held"),
        "{unknown}"
    );
    let voice_announcements = |hq: &Subscriber| {
        hq.seen
            .iter()
            .filter(|m| m.topic == media_topic && m.json()["sha256"] == json!(sha_hex(&voice)))
            .count()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while voice_announcements(&hq) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the voice note was not announced again"
        );
        let _ = hq.drain(Duration::from_millis(200)).await;
    }
    outlet.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_gone_from_the_server_is_reported_once() {
    let server = server().await;
    let outlet = Outlet::new("media-gone", &shared_broker());
    let (_ca_dir, agent, mut hq) = linked_with_media(&server, &outlet).await;
    let media_topic = outlet.topic("message/media");
    hq.subscribe(&[&outlet.topic("media/#")]).await;

    // Gone (404): reported with its error, and not tried again.
    server
        .media()
        .fail_next(Some("404".parse().expect("a fault")));
    let gone = file_bytes(20_000, 4);
    let gone_id = budi_sends(&server, "hilang.jpg", &gone).await;
    let report = hq
        .seen_or_wait("the gone file's report", WAIT, |m| {
            m.topic == media_topic && m.json()["id"] == json!(gone_id)
        })
        .await
        .json();
    assert_eq!(report["error"], "gone", "{report}");
    assert_eq!(report["sha256"], json!(sha_hex(&gone)));
    let downloads = server.media().stats().downloads;

    // The next file is fetched as usual.
    let ok = file_bytes(50_000, 5);
    let ok_id = budi_sends(&server, "utuh.jpg", &ok).await;
    let announced = hq
        .seen_or_wait("the second file's announcement", WAIT, |m| {
            m.topic == media_topic && m.json()["id"] == json!(ok_id)
        })
        .await
        .json();
    assert_eq!(announced["sha256"], json!(sha_hex(&ok)), "{announced}");
    let chunk = outlet.topic(&format!("media/{}/0", sha_hex(&ok)));
    let first = hq
        .seen_or_wait("its chunk", WAIT, |m| m.topic == chunk)
        .await;
    assert_eq!(first.payload, ok);

    // Once only: the gone file was neither fetched nor reported again.
    let reports = hq
        .seen
        .iter()
        .filter(|m| m.topic == media_topic && m.json()["id"] == json!(gone_id))
        .count();
    assert_eq!(reports, 1);
    assert_eq!(
        server.media().stats().downloads,
        downloads + 1,
        "{}",
        agent.log()
    );
    outlet.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_while_files_are_fetched_and_published_lose_none() {
    let server = server().await;
    let outlet = Outlet::new("media-kill", &shared_broker());
    let (_ca_dir, mut agent, mut hq) = linked_with_media(&server, &outlet).await;
    hq.subscribe(&[&outlet.topic("media/#")]).await;
    let save = tempfile::tempdir().expect("a temp dir");
    let saver_id = unique("hq-media");
    let mut saver = Saver::start(&outlet.broker, save.path(), &saver_id);

    // Killed as the message arrives: the download is under way or not begun.
    let first = file_bytes(2 * 1024 * 1024, 6);
    let first_id = budi_sends(&server, "satu.pdf", &first).await;
    let topic = outlet.topic("message/in");
    hq.seen_or_wait("the first file's message/in", WAIT, |m| {
        m.topic == topic && m.json()["id"] == json!(first_id)
    })
    .await;
    kill_and_restart(&mut agent).await;
    let got = saver
        .saved(&outlet.id, &sha_hex(&first), "pdf", &agent)
        .await;
    assert!(got == first, "the first file differs after the kill");

    // Killed while its chunks go out: the rest follows after the restart.
    let second = file_bytes(3 * 1024 * 1024, 7);
    budi_sends(&server, "dua.pdf", &second).await;
    first_chunk(&mut hq, &outlet, &second).await;
    kill_and_restart(&mut agent).await;
    let got = saver
        .saved(&outlet.id, &sha_hex(&second), "pdf", &agent)
        .await;
    assert!(got == second, "the second file differs after the kill");

    // HQ's saver killed while a file's chunks arrive: the next run (same
    // session) has the rest from the broker and asks for the file again.
    let third = file_bytes(3 * 1024 * 1024, 8);
    budi_sends(&server, "tiga.pdf", &third).await;
    first_chunk(&mut hq, &outlet, &third).await;
    drop(saver);
    saver = Saver::start(&outlet.broker, save.path(), &saver_id);
    let got = saver
        .saved(&outlet.id, &sha_hex(&third), "pdf", &agent)
        .await;
    assert!(
        got == third,
        "the third file differs after HQ's saver was killed"
    );
    outlet.clean_up().await;
}

/// Budi sends `bytes` as the file `name` (its kind from the extension),
/// without a caption; its message id.
async fn budi_sends(server: &FakeServer, name: &str, bytes: &[u8]) -> String {
    server
        .contacts()
        .send_file(BUDI, name, bytes, "")
        .await
        .expect("Budi sends")
}

/// Waits until HQ has seen the first chunk of `bytes`.
async fn first_chunk(hq: &mut Subscriber, outlet: &Outlet, bytes: &[u8]) {
    let chunk = outlet.topic(&format!("media/{}/", sha_hex(bytes)));
    hq.seen_or_wait("a file's first chunk", WAIT, |m| {
        m.topic.starts_with(&chunk)
    })
    .await;
}

async fn kill_and_restart(agent: &mut Agent) {
    agent.signal("KILL");
    agent.wait_exit().await;
    agent.spawn();
    agent.wait_state("connected").await;
}
