//! MQTT packets on the wire, for both protocol versions on one listener: MQTT 3.1.1 (OASIS
//! standard, protocol level 4) and MQTT 5.0 (level 5). The bytes are read and written by rumqttc's
//! packet codecs (`mqttbytes`, the same code its client uses); this file turns them into one
//! version-neutral [`Incoming`] and writes our answers in the client's version.
//!
//! The version is fixed by the first packet, the CONNECT: its protocol level byte decides which
//! codec reads everything after it.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::mqttbytes::QoS as Q4;
use rumqttc::v5::mqttbytes::v5;
use rumqttc::v5::mqttbytes::QoS as Q5;

/// The protocol version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V311 => "3.1.1",
            Version::V5 => "5",
        }
    }
}

/// A CONNECT, whatever its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectIn {
    pub version: Version,
    pub client_id: String,
    /// 3.1.1 clean session / 5 clean start.
    pub clean: bool,
    pub keep_alive: u16,
    pub login: Option<(String, String)>,
    /// MQTT 5 session expiry interval (seconds); `None` for 3.1.1.
    pub session_expiry: Option<u32>,
    /// MQTT 5 receive maximum: QoS 1 messages the client takes unacknowledged.
    pub receive_maximum: Option<u16>,
    /// MQTT 5 largest packet the client accepts.
    pub max_packet_size: Option<u32>,
    pub has_will: bool,
}

/// A PUBLISH from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishIn {
    pub topic: String,
    pub qos: u8,
    pub retain: bool,
    pub pkid: u16,
    pub payload: Bytes,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    /// MQTT 5 topic alias (we grant none, so any is a protocol error).
    pub topic_alias: Option<u16>,
}

/// What a client can send, after it connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Publish(PublishIn),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe {
        pkid: u16,
        /// (filter, requested QoS, MQTT 5 "no local" flag)
        filters: Vec<(String, u8)>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    Disconnect {
        session_expiry: Option<u32>,
    },
    /// A packet only a server sends (CONNACK, SUBACK, …) or AUTH, which we do not offer.
    Unexpected(&'static str),
}

/// Why the bytes could not be read as MQTT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the packet is larger than this server accepts ({0} bytes at most)")]
    TooLarge(usize),
    #[error("unsupported protocol version (level {0}); use MQTT 3.1.1 or 5")]
    UnsupportedVersion(u8),
    #[error("malformed packet: {0}")]
    Malformed(String),
}

/// Reads the first packet of a connection, which must be a CONNECT. `Ok(None)`: more bytes needed.
pub fn read_connect(buf: &mut BytesMut, max: usize) -> Result<Option<ConnectIn>, DecodeError> {
    // The fixed header says how long the packet is; the variable header's protocol level (byte
    // 7 after the fixed header: length 0x0004, "MQTT", level) says which codec reads it.
    if let Err(e) = rumqttc::mqttbytes::check(buf.iter(), max) {
        return need_more_or(e);
    }
    // The fixed header: one type byte, then the remaining length in 1 to 4 bytes, each but the
    // last with its high bit set (`check` has validated it).
    let at = 1 + buf[1..].iter().take_while(|b| *b & 0x80 != 0).count() + 1;
    if buf[0] >> 4 != 1 {
        return Err(DecodeError::Malformed(
            "the first packet must be a CONNECT".into(),
        ));
    }
    let level = buf.get(at + 6).copied().unwrap_or(0);
    match level {
        4 => match v4::Packet::read(buf, max) {
            Ok(v4::Packet::Connect(c)) => Ok(Some(ConnectIn {
                version: Version::V311,
                client_id: c.client_id,
                clean: c.clean_session,
                keep_alive: c.keep_alive,
                login: c.login.map(|l| (l.username, l.password)),
                session_expiry: None,
                receive_maximum: None,
                max_packet_size: None,
                has_will: c.last_will.is_some(),
            })),
            Ok(_) => Err(DecodeError::Malformed(
                "the first packet must be a CONNECT".into(),
            )),
            Err(e) => Err(DecodeError::Malformed(format!("{e:?}"))),
        },
        5 => match v5::Packet::read(buf, Some(max as u32)) {
            Ok(v5::Packet::Connect(c, will, login)) => {
                let props = c.properties.unwrap_or_default();
                Ok(Some(ConnectIn {
                    version: Version::V5,
                    client_id: c.client_id,
                    clean: c.clean_start,
                    keep_alive: c.keep_alive,
                    login: login.map(|l| (l.username, l.password)),
                    session_expiry: props.session_expiry_interval,
                    receive_maximum: props.receive_maximum,
                    max_packet_size: props.max_packet_size,
                    has_will: will.is_some(),
                }))
            }
            Ok(_) => Err(DecodeError::Malformed(
                "the first packet must be a CONNECT".into(),
            )),
            Err(e) => Err(DecodeError::Malformed(format!("{e:?}"))),
        },
        other => Err(DecodeError::UnsupportedVersion(other)),
    }
}

fn need_more_or<T>(e: rumqttc::mqttbytes::Error) -> Result<Option<T>, DecodeError> {
    use rumqttc::mqttbytes::Error as E;
    match e {
        E::InsufficientBytes(_) => Ok(None),
        E::PayloadSizeLimitExceeded(n) => Err(DecodeError::TooLarge(n)),
        other => Err(DecodeError::Malformed(format!("{other:?}"))),
    }
}

/// Reads the next packet after the CONNECT. `Ok(None)`: more bytes needed.
pub fn read(
    version: Version,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Incoming>, DecodeError> {
    match version {
        Version::V311 => read_v4(buf, max),
        Version::V5 => read_v5(buf, max),
    }
}

fn q4(q: Q4) -> u8 {
    q as u8
}

fn q5(q: Q5) -> u8 {
    q as u8
}

fn read_v4(buf: &mut BytesMut, max: usize) -> Result<Option<Incoming>, DecodeError> {
    use v4::Packet as P;
    // Framing first: only a packet not yet whole means "more bytes". Once it is whole, any
    // error reading it (rumqttc reports a short field as "insufficient bytes" too) is malformed.
    if let Err(e) = rumqttc::mqttbytes::check(buf.iter(), max) {
        return need_more_or(e);
    }
    let packet = P::read(buf, max).map_err(|e| DecodeError::Malformed(format!("{e:?}")))?;
    Ok(Some(match packet {
        P::Connect(_) => Incoming::Unexpected("a second CONNECT"),
        P::Publish(p) => Incoming::Publish(PublishIn {
            topic: p.topic,
            qos: q4(p.qos),
            retain: p.retain,
            pkid: p.pkid,
            payload: p.payload,
            response_topic: None,
            correlation_data: None,
            topic_alias: None,
        }),
        P::PubAck(a) => Incoming::PubAck(a.pkid),
        P::PubRec(a) => Incoming::PubRec(a.pkid),
        P::PubRel(a) => Incoming::PubRel(a.pkid),
        P::PubComp(a) => Incoming::PubComp(a.pkid),
        P::Subscribe(s) => Incoming::Subscribe {
            pkid: s.pkid,
            filters: s.filters.into_iter().map(|f| (f.path, q4(f.qos))).collect(),
        },
        P::Unsubscribe(u) => Incoming::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        P::PingReq => Incoming::PingReq,
        P::Disconnect => Incoming::Disconnect {
            session_expiry: None,
        },
        P::ConnAck(_) => Incoming::Unexpected("CONNACK"),
        P::SubAck(_) => Incoming::Unexpected("SUBACK"),
        P::UnsubAck(_) => Incoming::Unexpected("UNSUBACK"),
        P::PingResp => Incoming::Unexpected("PINGRESP"),
    }))
}

fn read_v5(buf: &mut BytesMut, max: usize) -> Result<Option<Incoming>, DecodeError> {
    use v5::Packet as P;
    // A DISCONNECT with no reason code (remaining length 0, "normal disconnection", MQTT 5
    // §3.14.2.1) is valid, but rumqttc's reader refuses it as "payload required".
    // Likewise a reason code without a property length (§3.14.2.2.1: it may be omitted).
    if buf.len() >= 2 && buf[0] == 0xE0 && buf[1] <= 1 {
        let whole = 2 + usize::from(buf[1]);
        if buf.len() < whole {
            return Ok(None);
        }
        let _ = buf.split_to(whole);
        return Ok(Some(Incoming::Disconnect {
            session_expiry: None,
        }));
    }
    // Framing first, as for 3.1.1.
    if let Err(e) = v5::check(buf.iter(), Some(max as u32)) {
        return need_more_or_v5(e);
    }
    let packet =
        P::read(buf, Some(max as u32)).map_err(|e| DecodeError::Malformed(format!("{e:?}")))?;
    Ok(Some(match packet {
        P::Connect(..) => Incoming::Unexpected("a second CONNECT"),
        P::Publish(p) => {
            let props = p.properties.unwrap_or_default();
            Incoming::Publish(PublishIn {
                topic: String::from_utf8(p.topic.to_vec())
                    .map_err(|_| DecodeError::Malformed("the topic is not valid UTF-8".into()))?,
                qos: q5(p.qos),
                retain: p.retain,
                pkid: p.pkid,
                payload: p.payload,
                response_topic: props.response_topic,
                correlation_data: props.correlation_data,
                topic_alias: props.topic_alias,
            })
        }
        P::PubAck(a) => Incoming::PubAck(a.pkid),
        P::PubRec(a) => Incoming::PubRec(a.pkid),
        P::PubRel(a) => Incoming::PubRel(a.pkid),
        P::PubComp(a) => Incoming::PubComp(a.pkid),
        P::Subscribe(s) => Incoming::Subscribe {
            pkid: s.pkid,
            filters: s.filters.into_iter().map(|f| (f.path, q5(f.qos))).collect(),
        },
        P::Unsubscribe(u) => Incoming::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        P::PingReq(_) => Incoming::PingReq,
        P::Disconnect(d) => Incoming::Disconnect {
            session_expiry: d.properties.and_then(|p| p.session_expiry_interval),
        },
        P::ConnAck(_) => Incoming::Unexpected("CONNACK"),
        P::SubAck(_) => Incoming::Unexpected("SUBACK"),
        P::UnsubAck(_) => Incoming::Unexpected("UNSUBACK"),
        P::PingResp(_) => Incoming::Unexpected("PINGRESP"),
        P::Auth(_) => Incoming::Unexpected("AUTH"),
    }))
}

fn need_more_or_v5<T>(e: rumqttc::v5::mqttbytes::Error) -> Result<Option<T>, DecodeError> {
    use rumqttc::v5::mqttbytes::Error as E;
    match e {
        E::InsufficientBytes(_) => Ok(None),
        E::PayloadSizeLimitExceeded { pkt_size, .. } => Err(DecodeError::TooLarge(pkt_size)),
        other => Err(DecodeError::Malformed(format!("{other:?}"))),
    }
}

/// How a CONNECT was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectCode {
    Accepted,
    BadCredentials,
    NotAuthorized,
    Banned,
    ServerBusy,
    BadClientId,
    UnsupportedVersion,
    QuotaExceeded,
}

/// A message to deliver to a subscriber.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub topic: &'a str,
    pub payload: &'a Bytes,
    pub qos: u8,
    pub pkid: u16,
    pub dup: bool,
    pub content_type: Option<&'a str>,
    pub correlation_data: Option<&'a Bytes>,
    pub user_properties: &'a [(String, String)],
}

/// Our answers, written in the connection's version. Writing into a `BytesMut` cannot fail but
/// for sizes over the protocol's limit, which we never produce (every payload is bounded first).
pub struct Writer {
    pub version: Version,
}

fn qos4(q: u8) -> Q4 {
    match q {
        0 => Q4::AtMostOnce,
        1 => Q4::AtLeastOnce,
        _ => Q4::ExactlyOnce,
    }
}

fn qos5(q: u8) -> Q5 {
    match q {
        0 => Q5::AtMostOnce,
        1 => Q5::AtLeastOnce,
        _ => Q5::ExactlyOnce,
    }
}

impl Writer {
    pub fn connack(
        &self,
        out: &mut BytesMut,
        code: ConnectCode,
        session_present: bool,
        assigned_id: Option<String>,
        reason: Option<String>,
    ) {
        match self.version {
            Version::V311 => {
                use v4::ConnectReturnCode as C;
                let code = match code {
                    ConnectCode::Accepted => C::Success,
                    ConnectCode::BadCredentials => C::BadUserNamePassword,
                    ConnectCode::NotAuthorized | ConnectCode::Banned => C::NotAuthorized,
                    ConnectCode::ServerBusy | ConnectCode::QuotaExceeded => C::ServiceUnavailable,
                    ConnectCode::BadClientId => C::BadClientId,
                    ConnectCode::UnsupportedVersion => C::RefusedProtocolVersion,
                };
                let _ = v4::ConnAck::new(code, session_present).write(out);
            }
            Version::V5 => {
                use v5::ConnectReturnCode as C;
                let accepted = code == ConnectCode::Accepted;
                let code = match code {
                    ConnectCode::Accepted => C::Success,
                    ConnectCode::BadCredentials => C::BadUserNamePassword,
                    ConnectCode::NotAuthorized => C::NotAuthorized,
                    ConnectCode::Banned => C::Banned,
                    ConnectCode::ServerBusy => C::ServerBusy,
                    ConnectCode::BadClientId => C::ClientIdentifierNotValid,
                    ConnectCode::UnsupportedVersion => C::UnsupportedProtocolVersion,
                    ConnectCode::QuotaExceeded => C::QuotaExceeded,
                };
                let properties = v5::ConnAckProperties {
                    session_expiry_interval: None,
                    receive_max: None,
                    // What this broker does not offer, said up front (MQTT 5 §3.2.2.3).
                    retain_available: accepted.then_some(0),
                    max_qos: accepted.then_some(1),
                    shared_subscription_available: accepted.then_some(0),
                    subscription_identifiers_available: accepted.then_some(0),
                    wildcard_subscription_available: None,
                    topic_alias_max: None,
                    assigned_client_identifier: assigned_id,
                    reason_string: reason.filter(|r| !r.is_empty()),
                    max_packet_size: accepted.then_some(super::MAX_PACKET as u32),
                    user_properties: Vec::new(),
                    server_keep_alive: None,
                    response_information: None,
                    server_reference: None,
                    authentication_method: None,
                    authentication_data: None,
                };
                let _ = v5::Packet::ConnAck(v5::ConnAck {
                    session_present,
                    code,
                    properties: Some(properties),
                })
                .write(out, None);
            }
        }
    }

    /// SUBACK: `granted[i]` is the QoS granted to filter i, or `None` when refused.
    pub fn suback(&self, out: &mut BytesMut, pkid: u16, granted: &[Result<u8, Refused>]) {
        match self.version {
            Version::V311 => {
                let codes = granted
                    .iter()
                    .map(|g| match g {
                        Ok(q) => v4::SubscribeReasonCode::Success(qos4(*q)),
                        Err(_) => v4::SubscribeReasonCode::Failure,
                    })
                    .collect();
                let _ = v4::SubAck::new(pkid, codes).write(out);
            }
            Version::V5 => {
                use v5::SubscribeReasonCode as C;
                let codes = granted
                    .iter()
                    .map(|g| match g {
                        Ok(q) => C::Success(qos5(*q)),
                        Err(Refused::NotAuthorized) => C::NotAuthorized,
                        Err(Refused::Invalid) => C::TopicFilterInvalid,
                        Err(Refused::SharedNotSupported) => C::SharedSubscriptionsNotSupported,
                        Err(Refused::QuotaExceeded) => C::QuotaExceeded,
                    })
                    .collect();
                let _ = v5::Packet::SubAck(v5::SubAck {
                    pkid,
                    return_codes: codes,
                    properties: None,
                })
                .write(out, None);
            }
        }
    }

    pub fn unsuback(&self, out: &mut BytesMut, pkid: u16, count: usize) {
        match self.version {
            Version::V311 => {
                let _ = v4::UnsubAck::new(pkid).write(out);
            }
            Version::V5 => {
                let _ = v5::Packet::UnsubAck(v5::UnsubAck {
                    pkid,
                    reasons: vec![v5::UnsubAckReason::Success; count],
                    properties: None,
                })
                .write(out, None);
            }
        }
    }

    /// PUBACK; `refused` carries the reason for MQTT 5 (3.1.1 has no way to say it).
    pub fn puback(&self, out: &mut BytesMut, pkid: u16, refused: Option<(Refused, &str)>) {
        match self.version {
            Version::V311 => {
                let _ = v4::PubAck::new(pkid).write(out);
            }
            Version::V5 => {
                let mut ack = v5::PubAck::new(pkid, None);
                if let Some((why, text)) = refused {
                    ack.reason = match why {
                        Refused::NotAuthorized => v5::PubAckReason::NotAuthorized,
                        Refused::Invalid | Refused::SharedNotSupported => {
                            v5::PubAckReason::TopicNameInvalid
                        }
                        Refused::QuotaExceeded => v5::PubAckReason::QuotaExceeded,
                    };
                    ack.properties = Some(v5::PubAckProperties {
                        reason_string: Some(text.to_string()),
                        user_properties: Vec::new(),
                    });
                }
                let _ = v5::Packet::PubAck(ack).write(out, None);
            }
        }
    }

    pub fn pubrec(&self, out: &mut BytesMut, pkid: u16) {
        match self.version {
            Version::V311 => {
                let _ = v4::PubRec::new(pkid).write(out);
            }
            Version::V5 => {
                let _ = v5::Packet::PubRec(v5::PubRec::new(pkid, None)).write(out, None);
            }
        }
    }

    pub fn pubcomp(&self, out: &mut BytesMut, pkid: u16) {
        match self.version {
            Version::V311 => {
                let _ = v4::PubComp::new(pkid).write(out);
            }
            Version::V5 => {
                let _ = v5::Packet::PubComp(v5::PubComp::new(pkid, None)).write(out, None);
            }
        }
    }

    pub fn pingresp(&self, out: &mut BytesMut) {
        match self.version {
            Version::V311 => {
                let _ = v4::PingResp.write(out);
            }
            Version::V5 => {
                let _ = v5::Packet::PingResp(v5::PingResp).write(out, None);
            }
        }
    }

    /// MQTT 5 servers may say why they close a connection; 3.1.1 servers just close it.
    pub fn disconnect(&self, out: &mut BytesMut, reason: Goodbye) {
        if self.version == Version::V5 {
            use v5::DisconnectReasonCode as C;
            let code = match reason {
                Goodbye::ShuttingDown => C::ServerShuttingDown,
                Goodbye::KeepAlive => C::KeepAliveTimeout,
                Goodbye::TakenOver => C::SessionTakenOver,
                Goodbye::Protocol => C::ProtocolError,
                Goodbye::Malformed => C::MalformedPacket,
                Goodbye::TooLarge => C::PacketTooLarge,
                Goodbye::TopicAlias => C::TopicAliasInvalid,
            };
            // Written by hand: rumqttc 0.25's DISCONNECT writer miscounts its remaining length
            // when a reason comes without properties (one byte more is written than announced),
            // and writes nothing but `E0 00` when the properties are empty. Reason code and an
            // empty property length, as MQTT 5 §3.14 lays it out.
            out.extend_from_slice(&[0xE0, 0x02, code as u8, 0x00]);
        }
    }

    pub fn publish(&self, out: &mut BytesMut, m: &Outgoing<'_>) {
        match self.version {
            Version::V311 => {
                let mut p =
                    v4::Publish::from_bytes(m.topic.to_string(), qos4(m.qos), m.payload.clone());
                p.pkid = m.pkid;
                p.dup = m.dup;
                let _ = p.write(out);
            }
            Version::V5 => {
                let has_props = m.content_type.is_some()
                    || m.correlation_data.is_some()
                    || !m.user_properties.is_empty();
                let properties = has_props.then(|| v5::PublishProperties {
                    content_type: m.content_type.map(str::to_string),
                    correlation_data: m.correlation_data.cloned(),
                    user_properties: m.user_properties.to_vec(),
                    ..Default::default()
                });
                let p = v5::Publish {
                    dup: m.dup,
                    qos: qos5(m.qos),
                    retain: false,
                    topic: Bytes::copy_from_slice(m.topic.as_bytes()),
                    pkid: m.pkid,
                    payload: m.payload.clone(),
                    properties,
                };
                let _ = v5::Packet::Publish(p).write(out, None);
            }
        }
    }
}

/// Why a subscription or a publish was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    NotAuthorized,
    Invalid,
    SharedNotSupported,
    QuotaExceeded,
}

/// Why the server closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goodbye {
    ShuttingDown,
    KeepAlive,
    TakenOver,
    Protocol,
    Malformed,
    TooLarge,
    TopicAlias,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_v4(id: &str) -> BytesMut {
        let mut c = v4::Connect::new(id);
        c.set_login("u", "p");
        let mut b = BytesMut::new();
        c.write(&mut b).unwrap();
        b
    }

    #[test]
    fn both_versions_are_told_apart_by_their_connect() {
        let mut b = connect_v4("one");
        let c = read_connect(&mut b, 1024).unwrap().unwrap();
        assert_eq!(c.version, Version::V311);
        assert_eq!(c.login, Some(("u".into(), "p".into())));
        assert!(b.is_empty());

        let mut b = BytesMut::new();
        let connect = v5::Connect {
            keep_alive: 10,
            client_id: "five".into(),
            clean_start: false,
            properties: Some(v5::ConnectProperties {
                session_expiry_interval: Some(60),
                ..v5::ConnectProperties::new()
            }),
        };
        v5::Packet::Connect(connect, None, None)
            .write(&mut b, None)
            .unwrap();
        let c = read_connect(&mut b, 1024).unwrap().unwrap();
        assert_eq!(
            (c.version, c.client_id.as_str(), c.session_expiry),
            (Version::V5, "five", Some(60))
        );
    }

    /// Everything we write is exactly one whole packet to the client's reader (rumqttc's own).
    #[test]
    fn every_answer_reads_back_whole() {
        let payload = Bytes::from_static(b"payload");
        let props = [("status".to_string(), "ok".to_string())];
        for version in [Version::V311, Version::V5] {
            let w = Writer { version };
            type WriteOne<'a> = Box<dyn Fn(&mut BytesMut) + 'a>;
            let writers: Vec<WriteOne> = vec![
                Box::new(|o| w.connack(o, ConnectCode::Accepted, true, Some("id".into()), None)),
                Box::new(|o| {
                    w.connack(
                        o,
                        ConnectCode::BadCredentials,
                        false,
                        None,
                        Some("no".into()),
                    )
                }),
                Box::new(|o| w.suback(o, 7, &[Ok(1), Err(Refused::NotAuthorized), Ok(0)])),
                Box::new(|o| w.unsuback(o, 8, 2)),
                Box::new(|o| w.puback(o, 9, None)),
                Box::new(|o| w.puback(o, 9, Some((Refused::NotAuthorized, "why")))),
                Box::new(|o| w.pubrec(o, 10)),
                Box::new(|o| w.pubcomp(o, 11)),
                Box::new(|o| w.pingresp(o)),
                Box::new(|o| w.disconnect(o, Goodbye::ShuttingDown)),
                Box::new(|o| w.disconnect(o, Goodbye::TakenOver)),
                Box::new(|o| {
                    w.publish(
                        o,
                        &Outgoing {
                            topic: "a/b",
                            payload: &payload,
                            qos: 1,
                            pkid: 3,
                            dup: true,
                            content_type: Some("text/plain"),
                            correlation_data: Some(&payload),
                            user_properties: &props,
                        },
                    )
                }),
            ];
            for (i, write) in writers.iter().enumerate() {
                let mut out = BytesMut::new();
                write(&mut out);
                if out.is_empty() {
                    continue; // 3.1.1 has no server DISCONNECT
                }
                let whole = out.clone();
                let read = match version {
                    Version::V311 => v4::Packet::read(&mut out, 1 << 20)
                        .map(|_| ())
                        .map_err(|e| format!("{e:?}")),
                    Version::V5 => v5::Packet::read(&mut out, None)
                        .map(|_| ())
                        .map_err(|e| format!("{e:?}")),
                };
                assert!(
                    read.is_ok(),
                    "{version:?} answer {i} {whole:02x?}: {read:?}"
                );
                assert!(
                    out.is_empty(),
                    "{version:?} answer {i} left {out:02x?} of {whole:02x?}"
                );
            }
        }
    }

    #[test]
    fn a_v5_disconnect_without_reason_is_normal() {
        let mut b = BytesMut::from(&[0xE0u8, 0x00, 0xC0, 0x00][..]);
        assert_eq!(
            read(Version::V5, &mut b, 1024),
            Ok(Some(Incoming::Disconnect {
                session_expiry: None
            }))
        );
        assert_eq!(read(Version::V5, &mut b, 1024), Ok(Some(Incoming::PingReq)));
        let mut b = BytesMut::from(&[0xE0u8, 0x01, 0x00][..]);
        assert!(matches!(
            read(Version::V5, &mut b, 1024),
            Ok(Some(Incoming::Disconnect { .. }))
        ));
        // A whole packet whose inside is short is malformed, not "wait for more".
        let mut b = BytesMut::from(&[0x82u8, 0x02, 0x00, 0x01, 0xC0, 0x00][..]);
        assert!(read(Version::V5, &mut b, 1024).is_err());
        let mut b = BytesMut::from(&[0x82u8, 0x02, 0x00, 0x01][..]);
        assert!(read(Version::V311, &mut b, 1024).is_err());
    }

    #[test]
    fn partial_and_hostile_first_packets() {
        let whole = connect_v4("x");
        for cut in 0..whole.len() {
            let mut b = BytesMut::from(&whole[..cut]);
            assert_eq!(read_connect(&mut b, 1024), Ok(None), "cut at {cut}");
        }
        // MQTT 3.1 (MQIsdp, level 3) is refused by version, not as garbage.
        let mut b = BytesMut::from(
            &[
                0x10, 14, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 10, 0, 0,
            ][..],
        );
        assert!(read_connect(&mut b, 1024).is_err());
        let mut b = BytesMut::from(&[0x30u8, 2, 0, 0][..]);
        assert!(read_connect(&mut b, 1024).is_err());
        let mut b = BytesMut::from(&[0x10u8, 0xff, 0xff, 0xff, 0x7f][..]);
        assert_eq!(
            read_connect(&mut b, 1024),
            Err(DecodeError::TooLarge(268_435_455))
        );
    }
}
