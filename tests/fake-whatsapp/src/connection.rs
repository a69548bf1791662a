//! One client connection, from the TCP accept to the close.
//!
//! Each connection is one task that owns its WebSocket and its ciphers. The
//! rest of the server talks to it only through [`ConnCommand`]s, so a scan,
//! an injected stream error or a drop is serialised with the traffic the
//! client itself sends — just as a real server's socket would see them.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_websockets::{Message, ServerBuilder, WebSocketStream};
use wacore_binary::Node;
use wacore_binary::builder::NodeBuilder;

use crate::link_code;
use crate::noise::{self, Ciphers, HelloReply, InboundFrames};
use crate::observe::{Admission, ConnectionId, DeviceKey, Purpose, ServerEvent};
use crate::responder::{self, attr};
use crate::state::{
    ConnCommand, DeviceRecord, IssuedRefs, LoginFailure, PairSuccessCommand, PrimaryHelloCommand,
    Shared, StreamErrorKind,
};

/// Why a connection ended, for the event log.
type CloseReason = String;

/// Serves one accepted TCP connection until it closes.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    tcp: TcpStream,
    conn: ConnectionId,
    shutdown: watch::Receiver<bool>,
) {
    let faults = shared.state().faults.clone();
    let admission = if faults.refuse {
        Admission::Refused
    } else if faults.blackhole {
        Admission::Blackholed
    } else {
        Admission::Accepted
    };
    {
        let mut state = shared.state();
        let at_ms = shared.elapsed_ms();
        state.attempts.push(crate::observe::Attempt {
            connection: conn,
            at_ms,
            admission,
            handshake: None,
            device: None,
            purpose: None,
            device_name: None,
            closed_at_ms: None,
        });
    }
    shared.emit(ServerEvent::Accepted {
        connection: conn,
        admission,
    });

    let reason = match admission {
        Admission::Refused => {
            drop(tcp);
            "refused".to_string()
        }
        Admission::Blackholed => blackhole(tcp, shutdown).await,
        Admission::Accepted => {
            let mut session = Session::new(shared.clone(), conn, faults.delay);
            let reason = session.run(tcp, faults.close_after_frames, shutdown).await;
            shared.connection_closed(conn);
            reason
        }
    };
    {
        let mut state = shared.state();
        let at_ms = shared.elapsed_ms();
        if let Some(attempt) = state.attempts.iter_mut().find(|a| a.connection == conn) {
            attempt.closed_at_ms = Some(at_ms);
        }
    }
    shared.emit(ServerEvent::Closed {
        connection: conn,
        reason,
    });
}

/// Reads and discards until the peer gives up or the server stops.
async fn blackhole(mut tcp: TcpStream, mut shutdown: watch::Receiver<bool>) -> CloseReason {
    let mut buf = [0u8; 4096];
    loop {
        tokio::select! {
            read = tcp.read(&mut buf) => match read {
                Ok(0) | Err(_) => return "blackholed; client gave up".into(),
                Ok(_) => {}
            },
            _ = shutdown.changed() => return "server stopped".into(),
        }
    }
}

/// A pairing in flight: the `pair-success` IQ this connection is waiting to
/// see answered.
struct PendingPairing {
    iq_id: String,
    device_id: u16,
    reply: oneshot::Sender<Result<String, String>>,
}

struct Session {
    shared: Arc<Shared>,
    conn: ConnectionId,
    delay: Option<Duration>,
    ws: Option<WebSocketStream<TcpStream>>,
    frames: InboundFrames,
    device: Option<DeviceKey>,
    pending_pairing: Option<PendingPairing>,
    /// A link code the phone accepted: waiting for `companion_finish`.
    pending_link_code: Option<link_code::PrimaryHello>,
    /// The companion this connection logged in as.
    device_id: Option<u16>,
    /// Messages and receipts the client sent, handed to one routing task so
    /// the parties see them in the order the client sent them.
    router: Option<mpsc::UnboundedSender<Node>>,
}

/// What the node handler wants the loop to do next.
enum Flow {
    Continue,
    Close(CloseReason),
}

impl Session {
    fn new(shared: Arc<Shared>, conn: ConnectionId, delay: Option<Duration>) -> Self {
        Self {
            shared,
            conn,
            delay,
            ws: None,
            frames: InboundFrames::new(),
            device: None,
            pending_pairing: None,
            pending_link_code: None,
            device_id: None,
            router: None,
        }
    }

    async fn run(
        &mut self,
        tcp: TcpStream,
        close_after_frames: Option<u32>,
        mut shutdown: watch::Receiver<bool>,
    ) -> CloseReason {
        let (request, ws) = match ServerBuilder::new().accept(tcp).await {
            Ok(accepted) => accepted,
            Err(e) => return format!("websocket upgrade failed: {e}"),
        };
        if request.uri().path() != "/ws/chat" {
            return format!("wrong path {}", request.uri().path());
        }
        self.ws = Some(ws);

        let (mut ciphers, established_kind, payload) = match self.handshake().await {
            Ok(done) => done,
            Err(reason) => return reason,
        };
        let device = self.device.unwrap_or(DeviceKey([0; 32]));
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.shared
            .connection_opened(self.conn, device, established_kind, tx);

        let registration = payload.device_pairing_data.is_set() && payload.username.is_none();
        let purpose = if registration {
            Purpose::Registration
        } else {
            Purpose::Login
        };
        let device_name = payload
            .device_pairing_data
            .as_option()
            .and_then(|reg| reg.device_props.as_deref())
            .and_then(|bytes| {
                <waproto::whatsapp::DeviceProps as buffa::Message>::decode_from_slice(bytes).ok()
            })
            .and_then(|props| props.os);
        {
            let mut state = self.shared.state();
            if let Some(a) = state
                .attempts
                .iter_mut()
                .find(|a| a.connection == self.conn)
            {
                a.purpose = Some(purpose);
                a.device_name = device_name;
            }
        }
        self.shared.emit(ServerEvent::Handshake {
            connection: self.conn,
            kind: established_kind,
            purpose,
        });

        let opened = if registration {
            self.issue_refs(&mut ciphers).await
        } else {
            self.login(&mut ciphers, &payload).await
        };
        if let Flow::Close(reason) = opened {
            self.close().await;
            return reason;
        }

        let mut frames_left = close_after_frames;
        loop {
            let Some(ws) = self.ws.as_mut() else {
                return "socket gone".into();
            };
            tokio::select! {
                message = ws.next() => {
                    let data = match message {
                        None => return "client closed".into(),
                        Some(Err(e)) => return format!("read error: {e}"),
                        Some(Ok(m)) if m.is_close() => return "client closed".into(),
                        Some(Ok(m)) if m.is_binary() => m.into_payload(),
                        Some(Ok(_)) => continue,
                    };
                    if let Err(e) = self.frames.feed(&data) {
                        return e.to_string();
                    }
                    while let Some(frame) = self.frames.next_frame() {
                        if let Some(left) = frames_left.as_mut() {
                            if *left == 0 {
                                self.close().await;
                                return "closed after N frames (fault)".into();
                            }
                            *left -= 1;
                        }
                        let node = match decode_node(&mut ciphers, &frame) {
                            Ok(node) => node,
                            Err(e) => {
                                self.close().await;
                                return format!("bad frame: {e}");
                            }
                        };
                        if let Flow::Close(reason) = self.on_node(&mut ciphers, node).await {
                            self.close().await;
                            return reason;
                        }
                    }
                }
                command = rx.recv() => {
                    let Some(command) = command else { continue };
                    if let Flow::Close(reason) = self.on_command(&mut ciphers, command).await {
                        self.close().await;
                        return reason;
                    }
                }
                _ = shutdown.changed() => {
                    self.close().await;
                    return "server stopped".into();
                }
            }
        }
    }

    /// Runs the Noise handshake; returns the ciphers, the pattern used and the
    /// client's payload.
    async fn handshake(
        &mut self,
    ) -> Result<
        (
            Ciphers,
            crate::noise::HandshakeKind,
            waproto::whatsapp::ClientPayload,
        ),
        CloseReason,
    > {
        let hello = self.read_frame().await?;
        let reply = noise::respond_to_hello(&self.shared.identity, &hello)
            .map_err(|e| format!("handshake: {e}"))?;
        let established = match reply {
            HelloReply::Done {
                server_hello,
                session,
            } => {
                self.send_raw(&server_hello).await?;
                *session
            }
            HelloReply::AwaitFinish {
                server_hello,
                pending,
            } => {
                self.send_raw(&server_hello).await?;
                let finish = self.read_frame().await?;
                pending
                    .finish(&finish)
                    .map_err(|e| format!("handshake: {e}"))?
            }
        };
        self.device = Some(DeviceKey(established.client_static));
        Ok((established.ciphers, established.kind, established.payload))
    }

    /// Reads WebSocket messages until one whole frame is buffered.
    async fn read_frame(&mut self) -> Result<Vec<u8>, CloseReason> {
        loop {
            if let Some(frame) = self.frames.next_frame() {
                return Ok(frame);
            }
            let ws = self.ws.as_mut().ok_or("socket gone")?;
            match ws.next().await {
                None => return Err("client closed during handshake".into()),
                Some(Err(e)) => return Err(format!("read error during handshake: {e}")),
                Some(Ok(m)) if m.is_binary() => {
                    let data = m.into_payload();
                    self.frames.feed(&data).map_err(|e| e.to_string())?;
                }
                Some(Ok(m)) if m.is_close() => return Err("client closed during handshake".into()),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Sends one unencrypted handshake message (framed).
    async fn send_raw(&mut self, payload: &[u8]) -> Result<(), CloseReason> {
        let framed = noise::frame(payload).map_err(|e| e.to_string())?;
        self.send_bytes(framed).await
    }

    async fn send_bytes(&mut self, bytes: Vec<u8>) -> Result<(), CloseReason> {
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        let ws = self.ws.as_mut().ok_or("socket gone")?;
        ws.send(Message::binary(bytes))
            .await
            .map_err(|e| format!("write error: {e}"))
    }

    async fn send_node(&mut self, ciphers: &mut Ciphers, node: &Node) -> Result<(), CloseReason> {
        let plain = wacore_binary::marshal::marshal(node).map_err(|e| e.to_string())?;
        let sealed = ciphers.seal(&plain).map_err(|e| e.to_string())?;
        self.send_bytes(sealed).await
    }

    async fn close(&mut self) {
        if let Some(mut ws) = self.ws.take() {
            let _ = ws.close().await;
        }
    }

    /// An unpaired client: send it the refs for its QR codes.
    async fn issue_refs(&mut self, ciphers: &mut Ciphers) -> Flow {
        let count = self.shared.config.refs_per_pairing.max(1);
        let refs: Vec<String> = (0..count).map(|_| new_ref()).collect();
        {
            let mut state = self.shared.state();
            for r in &refs {
                state.ref_owner.insert(r.clone(), self.conn);
            }
            if let Some(live) = state.connections.get_mut(&self.conn) {
                live.refs = Some(IssuedRefs {
                    refs: refs.clone(),
                    issued_at: Instant::now(),
                });
            }
        }
        let node = NodeBuilder::new("iq")
            .attr("from", "s.whatsapp.net")
            .attr("type", "set")
            .attr("id", format!("pd-{}", self.conn.0))
            .attr("xmlns", "md")
            .children([NodeBuilder::new("pair-device")
                .children(
                    refs.iter()
                        .map(|r| NodeBuilder::new("ref").bytes(r.as_bytes().to_vec()).build()),
                )
                .build()])
            .build();
        if let Err(reason) = self.send_node(ciphers, &node).await {
            return Flow::Close(reason);
        }
        self.shared.emit(ServerEvent::PairDevice {
            connection: self.conn,
            refs: count,
        });
        Flow::Continue
    }

    /// A paired client logging in: `<success>` or the verdict that replaces it.
    async fn login(
        &mut self,
        ciphers: &mut Ciphers,
        payload: &waproto::whatsapp::ClientPayload,
    ) -> Flow {
        let now = unix_now();
        let verdict = {
            let mut state = self.shared.state();
            let failure = match state.faults.login_failure.clone() {
                Some(LoginFailure::TemporaryBan { code, until_unix }) if until_unix > now => {
                    Some((402, Some((code, until_unix - now))))
                }
                Some(LoginFailure::TemporaryBan { .. }) => {
                    state.faults.login_failure = None;
                    None
                }
                Some(LoginFailure::ClientOutdated) => Some((405, None)),
                None => None,
            };
            match failure {
                Some(f) => Err(f),
                None => {
                    let account_phone = &self.shared.config.account.phone;
                    let known = self
                        .device
                        .and_then(|key| Shared::device_by_key(&state, &key))
                        .filter(|id| {
                            payload.device == Some(u32::from(*id))
                                && payload.username.map(|u| u.to_string()).as_ref()
                                    == Some(account_phone)
                        });
                    match known {
                        Some(id) => {
                            let jid = self.shared.device_jid(id);
                            if let Some(live) = state.connections.get_mut(&self.conn) {
                                live.jid = Some(jid.clone());
                                live.device_id = Some(id);
                            }
                            // One session per device: a newer login replaces
                            // any older one, as WhatsApp does.
                            let older: Vec<_> = state
                                .connections
                                .iter()
                                .filter(|(c, live)| {
                                    **c != self.conn
                                        && Some(live.device) == self.device
                                        && live.jid.is_some()
                                })
                                .map(|(_, live)| live.tx.clone())
                                .collect();
                            for tx in older {
                                let _ =
                                    tx.send(ConnCommand::StreamError(StreamErrorKind::Replaced));
                            }
                            Ok((id, jid))
                        }
                        None => Err((401, None)),
                    }
                }
            }
        };

        match verdict {
            Ok((device_id, jid)) => {
                self.device_id = Some(device_id);
                let lid: wacore_binary::Jid = self
                    .shared
                    .device_lid(device_id)
                    .parse()
                    .unwrap_or_default();
                let success = NodeBuilder::new("success")
                    .attr("t", now.to_string())
                    .attr("lid", lid)
                    .attr("location", "lla")
                    .attr("props", "1")
                    .build();
                if let Err(reason) = self.send_node(ciphers, &success).await {
                    return Flow::Close(reason);
                }
                self.shared.emit(ServerEvent::LoggedIn {
                    connection: self.conn,
                    jid,
                });
                Flow::Continue
            }
            Err((reason, ban)) => {
                let mut failure = NodeBuilder::new("failure").attr("reason", reason.to_string());
                if let Some((code, expire)) = ban {
                    failure = failure
                        .attr("code", code.to_string())
                        .attr("expire", expire.to_string());
                }
                let _ = self.send_node(ciphers, &failure.build()).await;
                self.shared.emit(ServerEvent::LoginRefused {
                    connection: self.conn,
                    reason,
                });
                Flow::Close(format!("login refused ({reason})"))
            }
        }
    }

    async fn on_node(&mut self, ciphers: &mut Ciphers, node: Node) -> Flow {
        match (node.tag.as_ref(), self.device_id) {
            ("iq", _) => {}
            ("ack", Some(device)) => {
                crate::messaging::on_ack(&self.shared, device, &node);
                return Flow::Continue;
            }
            ("message", Some(device)) => {
                // The server takes the message: ack first, route after.
                let ack = server_ack(&node, "message");
                if let Err(reason) = self.send_node(ciphers, &ack).await {
                    return Flow::Close(reason);
                }
                self.route(device, node);
                return Flow::Continue;
            }
            ("receipt", Some(device)) => {
                crate::messaging::on_receipt_ack(&self.shared, device, &node);
                let ack = server_ack(&node, "receipt");
                if let Err(reason) = self.send_node(ciphers, &ack).await {
                    return Flow::Close(reason);
                }
                self.route(device, node);
                return Flow::Continue;
            }
            ("presence", Some(device)) => {
                self.on_presence(device, &node);
                return Flow::Continue;
            }
            // chatstate, unified_session: nothing to answer.
            _ => return Flow::Continue,
        }
        let kind = attr(&node, "type").unwrap_or_default();
        let id = attr(&node, "id").unwrap_or_default();

        if (kind == "result" || kind == "error")
            && self.pending_pairing.as_ref().is_some_and(|p| p.iq_id == id)
        {
            return self.on_pair_answer(ciphers, &node, kind == "result").await;
        }
        if kind != "get" && kind != "set" {
            return Flow::Continue;
        }

        let xmlns = attr(&node, "xmlns").unwrap_or_default();
        let child = node
            .children()
            .and_then(|c| c.first())
            .map(|c| c.tag.to_string())
            .unwrap_or_default();
        self.shared.emit(ServerEvent::Iq {
            connection: self.conn,
            xmlns,
            kind,
            child,
        });
        if xmlns_is(&node, "md") && node.get_optional_child("remove-companion-device").is_some() {
            return self.remove_companion(ciphers, &node).await;
        }
        if xmlns_is(&node, "md")
            && let Some(reg) = node.get_optional_child("link_code_companion_reg")
        {
            let stage = attr(reg, "stage").unwrap_or_default();
            return match stage.as_str() {
                "companion_hello" => self.companion_hello(ciphers, &node).await,
                "companion_finish" => self.companion_finish(ciphers, &node).await,
                _ => self.iq_error(ciphers, &node, 400, "bad-request").await,
            };
        }
        let (answer, followup) = responder::answer(&self.shared, self.device_id, &node);
        if let Err(reason) = self.send_node(ciphers, &answer).await {
            return Flow::Close(reason);
        }
        if let (Some(bundle), Some(device)) = (followup.uploaded, self.device_id) {
            crate::messaging::on_upload(&self.shared, device, bundle);
        }
        if followup.offline_delivery {
            self.shared.emit(ServerEvent::Active {
                connection: self.conn,
            });
            // Whatever waited for this device goes first, then the count.
            let queued = crate::messaging::go_active(&self.shared, self.conn);
            let count = queued.len();
            for stanza in queued {
                if let Err(reason) = self.send_node(ciphers, &stanza).await {
                    return Flow::Close(reason);
                }
            }
            if let Err(reason) = self
                .send_node(ciphers, &responder::offline_done(count))
                .await
            {
                return Flow::Close(reason);
            }
            self.shared.emit(ServerEvent::OfflineDelivered {
                connection: self.conn,
                count,
            });
        }
        Flow::Continue
    }

    /// `<presence type="available|unavailable" name="…"/>` from a logged-in
    /// companion: its own presence, which WhatsApp uses to decide whether
    /// the primary phone still gets notifications. A presence with `to` is
    /// a subscription to a contact's presence, not an announcement.
    fn on_presence(&mut self, device: u16, node: &Node) {
        if attr(node, "to").is_some() {
            return;
        }
        let presence = match attr(node, "type").as_deref() {
            // A bare `<presence/>` is WhatsApp's "available".
            None | Some("available") => "available",
            Some("unavailable") => "unavailable",
            Some(_) => return,
        };
        if let Some(live) = self.shared.state().connections.get_mut(&self.conn) {
            live.presence = Some(presence.to_string());
        }
        self.shared.emit(ServerEvent::Presence {
            connection: self.conn,
            jid: self.shared.device_jid(device),
            presence: presence.to_string(),
        });
    }

    /// Hands a client message or receipt to this connection's routing task
    /// (started on first use), which handles them one by one, in order.
    fn route(&mut self, device: u16, node: Node) {
        let router = self.router.get_or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<Node>();
            let shared = self.shared.clone();
            tokio::spawn(async move {
                while let Some(node) = rx.recv().await {
                    if node.tag == "message" {
                        crate::messaging::on_client_message(shared.clone(), device, node).await;
                    } else {
                        crate::messaging::on_client_receipt(shared.clone(), device, node).await;
                    }
                }
            });
            tx
        });
        let _ = router.send(node);
    }

    /// The companion logs itself out: it is no longer a linked device.
    async fn remove_companion(&mut self, ciphers: &mut Ciphers, node: &Node) -> Flow {
        let removed = {
            let mut state = self.shared.state();
            let id = self
                .device
                .and_then(|key| Shared::device_by_key(&state, &key));
            id.and_then(|id| {
                state
                    .devices
                    .remove(&id)
                    .map(|_| self.shared.device_jid(id))
            })
        };
        let answer = NodeBuilder::new("iq")
            .attr("from", "s.whatsapp.net")
            .attr("id", attr(node, "id").unwrap_or_default())
            .attr("type", "result")
            .build();
        if let Err(reason) = self.send_node(ciphers, &answer).await {
            return Flow::Close(reason);
        }
        if let Some(jid) = removed {
            self.shared.emit(ServerEvent::Unlinked { jid });
        }
        Flow::Continue
    }

    /// Stage 1 of linking by code: keep the request for the number, answer
    /// with a pairing ref. Only this server's account can be linked; any other
    /// number is refused as `bad-request`.
    async fn companion_hello(&mut self, ciphers: &mut Ciphers, node: &Node) -> Flow {
        let Some(reg) = node.get_optional_child("link_code_companion_reg") else {
            return Flow::Continue;
        };
        let hello = match link_code::parse_companion_hello(reg) {
            Ok(hello) if hello.phone == self.shared.config.account.phone => hello,
            Ok(_) | Err(_) => return self.iq_error(ciphers, node, 400, "bad-request").await,
        };
        let pairing_ref: Vec<u8> = new_ref().into_bytes();
        {
            let mut state = self.shared.state();
            state.link_code = Some(link_code::LinkCodeRequest {
                conn: self.conn,
                pairing_ref: pairing_ref.clone(),
                wrapped_companion_ephemeral: hello.wrapped_companion_ephemeral,
                issued_at: Instant::now(),
            });
        }
        let id = attr(node, "id").unwrap_or_default();
        let answer = link_code::companion_hello_result(&id, &pairing_ref);
        if let Err(reason) = self.send_node(ciphers, &answer).await {
            return Flow::Close(reason);
        }
        self.shared.emit(ServerEvent::LinkCodeRequested {
            connection: self.conn,
        });
        Flow::Continue
    }

    /// Stage 3 of linking by code: the server acknowledges the bundle; the
    /// phone opens it and, when the code was right, signs the companion.
    async fn companion_finish(&mut self, ciphers: &mut Ciphers, node: &Node) -> Flow {
        let Some(hello) = self.pending_link_code.take() else {
            return self.iq_error(ciphers, node, 400, "bad-request").await;
        };
        let id = attr(node, "id").unwrap_or_default();
        if let Err(reason) = self
            .send_node(ciphers, &link_code::companion_finish_result(&id))
            .await
        {
            let _ = hello.reply.send(Err(reason.clone()));
            return Flow::Close(reason);
        }
        let opened = link_code::open_key_bundle(&hello, &self.shared.phone_identity, node)
            .and_then(|keys| crate::phone::pair_success(&self.shared, &keys, hello.device_id));
        let (iq_id, pair_success) = match opened {
            Ok(done) => done,
            Err(why) => {
                // The request stays: the user may type the code again, as
                // the companion allows a few attempts per code.
                let _ = hello.reply.send(Err(why));
                return Flow::Continue;
            }
        };
        self.shared.state().link_code = None;
        self.on_command(
            ciphers,
            ConnCommand::PairSuccess(Box::new(PairSuccessCommand {
                iq_id,
                node: pair_success,
                device_id: hello.device_id,
                reply: hello.reply,
            })),
        )
        .await
    }

    async fn iq_error(
        &mut self,
        ciphers: &mut Ciphers,
        node: &Node,
        code: u16,
        text: &str,
    ) -> Flow {
        let answer = NodeBuilder::new("iq")
            .attr("from", "s.whatsapp.net")
            .attr("id", attr(node, "id").unwrap_or_default())
            .attr("type", "error")
            .children([NodeBuilder::new("error")
                .attr("code", code.to_string())
                .attr("text", text.to_string())
                .build()])
            .build();
        match self.send_node(ciphers, &answer).await {
            Ok(()) => Flow::Continue,
            Err(reason) => Flow::Close(reason),
        }
    }

    /// The client's answer to `pair-success`: `pair-device-sign` registers the
    /// device and the stream restarts (515), as on the real server.
    async fn on_pair_answer(&mut self, ciphers: &mut Ciphers, node: &Node, ok: bool) -> Flow {
        let Some(pending) = self.pending_pairing.take() else {
            return Flow::Continue;
        };
        let signed = ok && node.get_optional_child("pair-device-sign").is_some();
        if !signed {
            let why = node
                .get_optional_child("error")
                .map(|e| {
                    format!(
                        "{} {}",
                        attr(e, "code").unwrap_or_default(),
                        attr(e, "text").unwrap_or_default()
                    )
                })
                .unwrap_or_else(|| "no pair-device-sign".into());
            let _ = pending.reply.send(Err(why));
            return Flow::Continue;
        }

        let jid = self.shared.device_jid(pending.device_id);
        {
            let mut state = self.shared.state();
            if let Some(device) = self.device {
                state.devices.insert(
                    pending.device_id,
                    DeviceRecord {
                        noise_key: device,
                        key_index: u32::from(pending.device_id),
                    },
                );
            }
            if let Some(live) = state.connections.get_mut(&self.conn) {
                live.paired = true;
                live.jid = Some(jid.clone());
            }
        }
        self.shared.emit(ServerEvent::Paired {
            connection: self.conn,
            jid: jid.clone(),
        });
        crate::messaging::notify_devices(&self.shared, pending.device_id, true);
        let _ = pending.reply.send(Ok(jid));
        self.stream_error(ciphers, StreamErrorKind::Restart).await
    }

    async fn on_command(&mut self, ciphers: &mut Ciphers, command: ConnCommand) -> Flow {
        match command {
            ConnCommand::PairSuccess(command) => {
                let PairSuccessCommand {
                    iq_id,
                    node,
                    device_id,
                    reply,
                } = *command;
                if let Err(reason) = self.send_node(ciphers, &node).await {
                    let _ = reply.send(Err(reason.clone()));
                    return Flow::Close(reason);
                }
                self.shared.emit(ServerEvent::PairSuccessSent {
                    connection: self.conn,
                    jid: self.shared.device_jid(device_id),
                });
                self.pending_pairing = Some(PendingPairing {
                    iq_id,
                    device_id,
                    reply,
                });
                Flow::Continue
            }
            ConnCommand::PrimaryHello(command) => {
                let PrimaryHelloCommand { node, hello } = *command;
                if let Err(reason) = self.send_node(ciphers, &node).await {
                    let _ = hello.reply.send(Err(reason.clone()));
                    return Flow::Close(reason);
                }
                self.shared.emit(ServerEvent::PrimaryHelloSent {
                    connection: self.conn,
                });
                self.pending_link_code = Some(hello);
                Flow::Continue
            }
            ConnCommand::Deliver(node) => match self.send_node(ciphers, &node).await {
                Ok(()) => Flow::Continue,
                Err(reason) => Flow::Close(reason),
            },
            ConnCommand::DeliverAndClose(node) => {
                let _ = self.send_node(ciphers, &node).await;
                Flow::Close("dropped after a message, before its ack (fault)".into())
            }
            ConnCommand::StreamError(kind) => self.stream_error(ciphers, kind).await,
            ConnCommand::Close => Flow::Close("dropped by the server (fault)".into()),
        }
    }

    /// Sends a stream error and ends the stream, as the real server does.
    async fn stream_error(&mut self, ciphers: &mut Ciphers, kind: StreamErrorKind) -> Flow {
        let node = stream_error_node(kind);
        let _ = self.send_node(ciphers, &node).await;
        self.shared.emit(ServerEvent::StreamErrorSent {
            connection: self.conn,
            kind,
        });
        Flow::Close(format!("stream error {kind:?}"))
    }
}

pub(crate) fn stream_error_node(kind: StreamErrorKind) -> Node {
    let builder = NodeBuilder::new("stream:error");
    match kind {
        StreamErrorKind::Restart => builder.attr("code", "515").build(),
        StreamErrorKind::Unavailable => builder.attr("code", "503").build(),
        StreamErrorKind::DeviceRemoved => builder
            .attr("code", "401")
            .children([NodeBuilder::new("conflict")
                .attr("type", "device_removed")
                .build()])
            .build(),
        StreamErrorKind::Replaced => builder
            .children([NodeBuilder::new("conflict")
                .attr("type", "replaced")
                .build()])
            .build(),
    }
}

/// The server's `<ack>` of a stanza the client sent: the message or receipt
/// was taken (`from` is whom it was for).
fn server_ack(node: &Node, class: &str) -> Node {
    let mut b = NodeBuilder::new("ack")
        .attr("class", class.to_string())
        .attr("id", attr(node, "id").unwrap_or_default())
        .attr("from", attr(node, "to").unwrap_or_default())
        .attr("t", unix_now().to_string());
    if class == "receipt"
        && let Some(kind) = attr(node, "type")
    {
        b = b.attr("type", kind);
    }
    b.build()
}

fn xmlns_is(node: &Node, xmlns: &str) -> bool {
    attr(node, "xmlns").as_deref() == Some(xmlns)
}

fn decode_node(ciphers: &mut Ciphers, frame: &[u8]) -> Result<Node, String> {
    let plain = ciphers.open(frame).map_err(|e| e.to_string())?;
    let data = wacore_binary::util::unpack(&plain).map_err(|e| e.to_string())?;
    let node = wacore_binary::marshal::unmarshal_ref(&data).map_err(|e| e.to_string())?;
    Ok(node.to_owned())
}

/// A pairing ref: opaque to the client, unique per server.
fn new_ref() -> String {
    use base64::Engine as _;
    let bytes: [u8; 18] = rand::random();
    format!("2@{}", base64::prelude::BASE64_STANDARD.encode(bytes))
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
