//! The media host against a plain whatsapp-rust client: a contact's real
//! encrypted file downloaded and decrypted by the client, faults on
//! download, and a file the client uploads reaching the contact decrypted.

mod common;
#[path = "common/contacts.rs"]
mod contacts;

use common::*;
use contacts::*;
use fake_whatsapp::ServerEvent;
use fake_whatsapp::media::MediaFault;
use sha2::{Digest, Sha256};
use waproto::whatsapp as wa;
use whatsapp_rust::download::MediaType;

const BUDI: &str = "6281111111111";

/// Bytes that do not compress or repeat: a stand-in for a photo.
fn photo(len: usize) -> Vec<u8> {
    (0..len).map(|_| rand::random::<u8>()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contacts_photo_is_downloaded_and_decrypted_by_a_real_client() {
    let server = server().await;
    let mut paired = paired_client(&server).await;
    let data = photo(200_000);
    let id = server
        .contacts()
        .send_file(BUDI, "bukti-transfer.jpg", &data, "sudah transfer ya")
        .await
        .expect("sent");
    let got = messages(&mut paired.client, 1, |m| m.id == id).await;
    let image = got[0].message.image_message.as_option().expect("an image");
    assert_eq!(image.caption.as_deref(), Some("sudah transfer ya"));
    assert_eq!(image.mimetype.as_deref(), Some("image/jpeg"));
    assert_eq!(image.file_length, Some(data.len() as u64));
    let downloaded = paired
        .client
        .client
        .download(image)
        .await
        .expect("the client downloads it");
    assert_eq!(downloaded, data, "the same bytes, decrypted");

    // A document and a voice note come as their kinds.
    let pdf = server
        .contacts()
        .send_file(BUDI, "pesanan.pdf", b"%PDF-1.4 pesanan", "")
        .await
        .expect("sent");
    let voice = server
        .contacts()
        .send_file(BUDI, "vn.ogg", &photo(9_000), "")
        .await
        .expect("sent");
    let got = messages(&mut paired.client, 2, |m| m.id == pdf || m.id == voice).await;
    let by = |id: &str| {
        got.iter()
            .find(|m| m.id == id)
            .expect("arrived")
            .message
            .clone()
    };
    let doc = by(&pdf);
    let doc = doc.document_message.as_option().expect("a document");
    assert_eq!(doc.file_name.as_deref(), Some("pesanan.pdf"));
    let bytes = paired.client.client.download(doc).await.expect("document");
    assert_eq!(bytes, b"%PDF-1.4 pesanan");
    let vn = by(&voice);
    let audio = vn.audio_message.as_option().expect("audio");
    assert_eq!(audio.ptt, Some(true), "a voice note");
    assert_eq!(
        paired
            .client
            .client
            .download(audio)
            .await
            .expect("voice")
            .len(),
        9_000
    );
    paired.client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_faults_are_what_whatsapp_answers() {
    let server = server().await;
    let mut paired = paired_client(&server).await;
    let mut images = Vec::new();
    for name in ["satu.jpg", "dua.jpg"] {
        let data = photo(50_000);
        let id = server
            .contacts()
            .send_file(BUDI, name, &data, "")
            .await
            .expect("sent");
        let got = messages(&mut paired.client, 1, |m| m.id == id).await;
        let image = got[0]
            .message
            .image_message
            .as_option()
            .expect("image")
            .clone();
        images.push((image, data));
    }
    let client = paired.client.client.clone();
    let status = |err: &anyhow::Error| format!("{err:#}");
    let (image, data) = &images[0];
    // A server error and a cut body are for one request: the next is whole.
    server.media().fail_next(Some(MediaFault::ServerError));
    let err = client.download(image).await.map(|_| ()).expect_err("a 500");
    assert!(status(&err).contains("500"), "{err:#}");
    server.media().fail_next(Some(MediaFault::Truncate));
    let err = client
        .download(image)
        .await
        .map(|_| ())
        .expect_err("a cut body");
    eprintln!("a truncated download: {err:#}");
    assert_eq!(&client.download(image).await.expect("whole again"), data);
    // Expired (410) and not found (404) stay so, as on WhatsApp: the
    // client's retry with a fresh media_conn gets the same answer.
    server.media().fail_next(Some(MediaFault::Gone));
    let err = client.download(image).await.map(|_| ()).expect_err("gone");
    assert!(status(&err).contains("410"), "{err:#}");
    let err = client
        .download(image)
        .await
        .map(|_| ())
        .expect_err("still gone");
    assert!(status(&err).contains("410"), "{err:#}");
    server.media().fail_next(Some(MediaFault::NotFound));
    let err = client
        .download(&images[1].0)
        .await
        .map(|_| ())
        .expect_err("not found");
    assert!(status(&err).contains("404"), "{err:#}");
    paired.client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_the_client_uploads_reaches_the_contact_decrypted() {
    let server = server().await;
    let paired = paired_client(&server).await;
    let data = photo(120_000);
    let upload = paired
        .client
        .client
        .upload(data.clone(), MediaType::Image, Default::default())
        .await
        .expect("the client uploads");
    assert!(
        upload.direct_path.starts_with("/v/t62.7118-24/"),
        "{}",
        upload.direct_path
    );
    let mut events = server.subscribe();
    let message = wa::Message {
        image_message: buffa::MessageField::some(wa::message::ImageMessage {
            url: Some(upload.url.clone()),
            direct_path: Some(upload.direct_path.clone()),
            media_key: Some(upload.media_key.to_vec()),
            file_sha256: Some(upload.file_sha256.to_vec()),
            file_enc_sha256: Some(upload.file_enc_sha256.to_vec()),
            file_length: Some(upload.file_length),
            mimetype: Some("image/jpeg".into()),
            caption: Some("promo minggu ini".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sent = paired
        .client
        .client
        .send_message(jid(BUDI), message)
        .await
        .expect("sent");
    let entry = server_pick(&mut events, "the contact decrypts it", |e| match e {
        ServerEvent::Decrypted { entry, .. } if entry.id == sent.message_id => Some(entry.clone()),
        _ => None,
    })
    .await;
    let file = entry.file.expect("a file");
    assert_eq!(file.kind, "image");
    assert_eq!(file.error, None);
    assert_eq!(file.size, Some(data.len() as u64));
    assert_eq!(
        file.sha256,
        Some(fake_whatsapp::media::hex(&Sha256::digest(&data)))
    );
    // The same ciphertext (same file, same media key) is stored once.
    let again = paired
        .client
        .client
        .upload(
            data,
            MediaType::Image,
            whatsapp_rust::upload::UploadOptions::new().with_media_key(upload.media_key),
        )
        .await
        .expect("again");
    assert_eq!(again.direct_path, upload.direct_path, "stored once");
}

/// Uploads must carry the `media_conn` auth and the ciphertext's hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_without_the_auth_or_with_a_wrong_hash_are_refused() {
    use base64::Engine;
    use wacore::net::{HttpClient, HttpRequest};
    let server = server().await;
    let http = server.media().client().expect("a client");
    let host = server.media().hostname();
    let body = b"ciphertext".to_vec();
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(&body));
    let post = |auth: &str, token: &str| {
        HttpRequest::post(format!(
            "https://{host}/mms/image/{token}?auth={auth}&token={token}"
        ))
        .with_body(body.clone())
    };
    let wrong_auth = http.execute(post("nope", &token)).await.expect("answered");
    assert_eq!(wrong_auth.status_code, 401);
    let auth = server.media().auth().to_string();
    let wrong_hash = http.execute(post(&auth, "AAAA")).await.expect("answered");
    assert_eq!(wrong_hash.status_code, 400);
    let ok = http.execute(post(&auth, &token)).await.expect("answered");
    assert_eq!(ok.status_code, 200, "{:?}", ok.body_string());
    let answer: serde_json::Value = serde_json::from_slice(&ok.body).expect("JSON");
    let direct_path = answer["direct_path"].as_str().expect("a direct path");
    let get = http
        .execute(HttpRequest::get(format!(
            "https://{host}{direct_path}&token={token}"
        )))
        .await
        .expect("answered");
    assert_eq!(get.status_code, 200);
    assert_eq!(get.body, body);
    assert_eq!(server.media().stats().refused, 2);
}

/// After linking, the phone sends the initial history sync as WhatsApp's
/// do: a client that keeps history downloads and decrypts the blob from the
/// media host (`Event::HistorySync`); one that skips history (as the agent
/// does) answers with a `hist_sync` receipt to the phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_companion_gets_the_initial_history_sync() {
    use whatsapp_rust::types::events::Event;
    let server = server().await;
    let mut events = server.subscribe();
    // Not `paired_client`: its wait for `Connected` would pass over a
    // history that comes first.
    let mut keeping = start_client(&server, memory_store()).await;
    let qr = keeping.next_qr().await;
    let linked = server.phone().scan(&qr).await.expect("scans");
    server_pick(
        &mut events,
        "the phone sends the history sync",
        |e| match e {
            ServerEvent::HistorySyncSent { jid, .. } if *jid == linked.jid => Some(()),
            _ => None,
        },
    )
    .await;
    keeping
        .wait_for("the history, downloaded and decrypted", |e| {
            matches!(e, Event::HistorySync(_)).then_some(())
        })
        .await;
    assert!(server.media().stats().downloads >= 1);
    keeping.stop().await;

    let mut events = server.subscribe();
    let mut skipping = start_client_with(&server, memory_store(), true).await;
    let qr = skipping.next_qr().await;
    let linked = server.phone().scan(&qr).await.expect("scans");
    let id = server_pick(&mut events, "the history sync to the second", |e| match e {
        ServerEvent::HistorySyncSent { jid, id } if *jid == linked.jid => Some(id.clone()),
        _ => None,
    })
    .await;
    server_pick(
        &mut events,
        "a hist_sync receipt to the phone",
        |e| match e {
            ServerEvent::ReceiptFromDevice { entry, .. }
                if entry.kind == "hist_sync" && entry.ids.contains(&id) =>
            {
                Some(())
            }
            _ => None,
        },
    )
    .await;
    skipping.stop().await;
}
