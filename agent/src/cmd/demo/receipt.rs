//! The demo's last act: Budi sends a photo of his transfer receipt, and the
//! demo, as HQ, puts it together from its chunks (`message/media`,
//! `media/<sha256>/<index>`), checks it and saves it, as `fleet media
//! --save` does.

use anyhow::{Context as _, bail};
use fake_whatsapp::Contacts;
use serde_json::json;

use super::{BUDI, Heard, Hq, Log, STEP};

/// Budi sends a photo of his transfer receipt; HQ puts it together from its
/// chunks on MQTT, checks it and saves it, as `fleet media --save` does.
pub(super) async fn receipt_photo(
    hq: &mut Hq,
    contacts: &Contacts,
    log: &Log,
) -> anyhow::Result<()> {
    let photo = receipt_png().context("drawing the receipt")?;
    let id = contacts
        .send_file(
            BUDI,
            "bukti-transfer.png",
            &photo,
            "Bukti transfer, Rp 150.000",
        )
        .await
        .context("Budi cannot send his photo")?;
    log.say(format!(
        "Budi sends a photo of his transfer receipt ({} bytes)",
        photo.len()
    ));
    let media_topic = hq.topic("message/media");
    let announced = hq
        .wait_for(&media_topic, "message/media for Budi's photo", |m| {
            m["id"] == json!(id)
        })
        .await?;
    log.say(format!("HQ  ← {media_topic} {announced}"));
    if let Some(error) = announced["error"].as_str() {
        bail!("the agent could not fetch the photo: {error}");
    }
    let sha = announced["sha256"].as_str().unwrap_or_default().to_string();
    let chunks = announced["chunks"].as_u64().unwrap_or(1) as usize;
    let chunk_topic = hq.topic(&format!("media/{sha}/"));
    let mut parts: Vec<Option<Vec<u8>>> = vec![None; chunks.min(64)];
    let deadline = tokio::time::Instant::now() + STEP;
    while parts.iter().any(Option::is_none) {
        if let Heard::Chunk { topic, payload } = hq.next(deadline, "the photo's chunks").await?
            && let Some(index) = topic
                .strip_prefix(&chunk_topic)
                .and_then(|i| i.parse::<usize>().ok())
            && let Some(part) = parts.get_mut(index)
        {
            *part = Some(payload);
        }
    }
    let file: Vec<u8> = parts.into_iter().flatten().flatten().collect();
    let got =
        crate::messages::media::spool::sha256_of(file.as_slice()).context("hashing the photo")?;
    if got != sha {
        bail!("the photo's chunks do not make the file HQ was promised");
    }
    let dir = std::env::temp_dir().join("outlet-agent-demo-hq");
    std::fs::create_dir_all(&dir).context("HQ's directory")?;
    let path = dir.join(format!("{sha}.png"));
    std::fs::write(&path, &file).context("saving the photo")?;
    log.say(format!(
        "HQ saved Budi's photo from {chunks} chunk(s): {} ({} bytes, sha256 {sha})",
        path.display(),
        file.len()
    ));
    Ok(())
}

/// A picture of a transfer receipt: a real PNG (white paper, a blue header,
/// grey lines of text, a green "paid" stamp).
fn receipt_png() -> anyhow::Result<Vec<u8>> {
    use outlet_display::frame::Frame;
    let (w, h) = (360u32, 480u32);
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let line = (120..400).contains(&y)
                && y % 40 < 10
                && (30..330 - (y / 40 % 3) * 60).contains(&x);
            let stamp = (230..320).contains(&x) && (400..450).contains(&y);
            let pixel = if y < 80 {
                [20, 90, 200]
            } else if stamp {
                [40, 170, 80]
            } else if line {
                [150, 150, 150]
            } else {
                [250, 250, 245]
            };
            rgb.extend_from_slice(&pixel);
        }
    }
    let frame = Frame::from_rgb888(w, h, &rgb).context("a frame")?;
    Ok(outlet_display::driver::png::encode_png(&frame)?)
}
