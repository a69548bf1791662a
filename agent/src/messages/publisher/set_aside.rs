//! Records the broker keeps refusing: struck when connections end right
//! after them, set aside after [`super::STRIKES`] (see the parent module's
//! doc), kept whole in the data directory first.

use super::{Publisher, STRIKE_WINDOW, STRIKES};

impl Publisher {
    /// The connection ended: if it ended soon after the oldest record in
    /// flight was handed over, that record gets a strike.
    pub(super) fn strike(&mut self) {
        let Some(&oldest) = self.in_flight.iter().min() else {
            return;
        };
        // Soon after the hand-over, and larger than anything the broker
        // took: a connection that dies for other reasons (a broker
        // restarting, another client on our id) strikes no ordinary record.
        let suspicious = self
            .handed_at
            .get(&oldest)
            .is_some_and(|(at, size)| at.elapsed() < STRIKE_WINDOW && *size > self.largest_acked);
        if !suspicious {
            self.suspect = None;
            return;
        }
        let strikes = match self.suspect {
            Some((seq, n)) if seq == oldest => n + 1,
            _ => 1,
        };
        self.suspect = Some((oldest, strikes));
        if strikes >= STRIKES {
            self.suspect = None;
            self.to_set_aside.push(oldest);
        }
    }

    /// Replaces each record the broker kept refusing by a notice, after
    /// keeping it whole in the data directory.
    pub(super) async fn set_aside(&mut self) {
        for seq in std::mem::take(&mut self.to_set_aside) {
            let rows = match self.messages.store.publications_after(seq - 1, 1).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "messages: cannot read a refused record");
                    continue;
                }
            };
            let Some(row) = rows.into_iter().find(|r| r.seq == seq) else {
                continue;
            };
            if is_notice(&row.payload) {
                // Already a notice: a broker that refuses this refuses
                // everything, and the original is kept already.
                continue;
            }
            // The original must be safe on disk before the queue lets go of it.
            if let Err(e) = crate::messages::kept::keep(
                &self.messages,
                crate::messages::kept::SET_ASIDE,
                &seq.to_string(),
                row.payload.clone(),
            )
            .await
            {
                tracing::warn!(error = %e, seq, "messages: cannot keep a refused record; it stays in the queue");
                continue;
            }
            let notice = set_aside_notice(&row.payload);
            match self.messages.store.replace_publication(seq, notice).await {
                Ok(true) => {
                    tracing::warn!(
                        seq,
                        bytes = row.payload.len(),
                        "messages: the broker keeps refusing a record; it goes to HQ as a \
                         notice (set_aside) and is kept whole in the data directory's set-aside/"
                    );
                    self.messages.report.send_modify(|r| r.set_aside += 1);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "messages: cannot set a refused record aside");
                }
            }
        }
    }
}

/// A notice that stands for a set-aside record.
fn is_notice(payload: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(payload)
        .is_ok_and(|v| v.get("set_aside") == Some(&serde_json::Value::Bool(true)))
}

/// What HQ gets in place of a record the broker refused: who, where, when
/// and what, without the content, and its size.
fn set_aside_notice(payload: &[u8]) -> Vec<u8> {
    const HEAD: &[&str] = &[
        "id",
        "chat",
        "from",
        "from_lid",
        "at",
        "kind",
        "group",
        "client_id",
        "to",
        "status",
    ];
    let mut notice = serde_json::Map::new();
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(payload) {
        for key in HEAD {
            if let Some(serde_json::Value::String(v)) = fields.get(*key) {
                // Even the head cannot make the notice large.
                notice.insert(
                    (*key).to_string(),
                    v.chars().take(256).collect::<String>().into(),
                );
            }
        }
    }
    notice.insert("set_aside".into(), true.into());
    notice.insert("bytes".into(), payload.len().into());
    serde_json::Value::Object(notice).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_keeps_who_and_drops_the_content() {
        let notice = set_aside_notice(br#"{"id":"A","from":"+62811","text":"long","kind":"text"}"#);
        let v: serde_json::Value = serde_json::from_slice(&notice).expect("JSON");
        assert_eq!(v["id"], "A");
        assert_eq!(v["set_aside"], true);
        assert!(v.get("text").is_none());
    }
}
