//! The few packets the endpoint handles, over rumqttc's MQTT 3.1.1 (`mqttbytes::v4`) and
//! MQTT 5 (`v5::mqttbytes::v5`) codecs. Only the protocol level in CONNECT is looked at here, to
//! pick the codec; everything else is parsed and written by rumqttc.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use rumqttc::v5::mqttbytes::v5;
use rumqttc::v5::mqttbytes::{Error as CodecError5, QoS as QoS5};

/// MQTT protocol version of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V311,
    V5,
}

/// A packet from a client, reduced to what the endpoint acts on.
#[derive(Debug)]
pub(crate) enum Incoming {
    Connect {
        client_id: String,
        keep_alive: u16,
        clean: bool,
        /// User name and password, if the client sent them.
        login: Option<(String, String)>,
    },
    Publish {
        topic: String,
        qos: u8,
        pkid: u16,
        payload: Bytes,
    },
    PubRel(u16),
    Subscribe {
        pkid: u16,
        filters: usize,
    },
    Unsubscribe {
        pkid: u16,
        filters: usize,
    },
    PingReq,
    Disconnect,
    /// Acks of publishes we never send; ignored.
    Other,
}

/// A packet to a client.
#[derive(Debug)]
pub(crate) enum Outgoing {
    ConnAck {
        code: ConnectCode,
        /// MQTT 5: the most QoS 1/2 publishes the client may have unacknowledged.
        receive_max: u16,
        /// MQTT 5: the keep-alive the server holds the client to, when not the one it asked.
        server_keep_alive: Option<u16>,
        /// MQTT 5: the largest packet the server takes.
        max_packet_size: u32,
    },
    /// MQTT 5 only (3.1.1 has no server DISCONNECT: the connection is just closed).
    Disconnect(DisconnectReason),
    /// QoS 1 ack; a reason other than success is a negative ack on MQTT 5 and a plain ack on
    /// 3.1.1, which has no negative ack.
    PubAck {
        pkid: u16,
        reason: Reason,
    },
    /// QoS 2, first ack; as [`Outgoing::PubAck`].
    PubRec {
        pkid: u16,
        reason: Reason,
    },
    PubComp(u16),
    /// Every filter refused: this endpoint only receives.
    SubAck {
        pkid: u16,
        filters: usize,
    },
    UnsubAck {
        pkid: u16,
        filters: usize,
    },
    PingResp,
}

/// How a publish was settled, as MQTT 5's PUBACK/PUBREC reason codes say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// 0x00: taken.
    Success,
    /// 0x90: no rule (or no target) for the topic.
    TopicNameInvalid,
    /// 0x99: the target refused the payload.
    PayloadFormatInvalid,
}

/// How a CONNECT is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectCode {
    Accepted,
    /// 3.1.1: 1, unacceptable protocol version; 5: 0x84.
    UnsupportedVersion,
    /// 3.1.1: 4, bad user name or password; 5: 0x86.
    BadLogin,
    /// 3.1.1: 3, server unavailable; 5: 0x88 (a login refused unchecked, see `throttle`).
    Unavailable,
}

/// Why the server ends an MQTT 5 connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DisconnectReason {
    /// 0x90: a PUBLISH topic with a wildcard.
    TopicNameInvalid,
}

/// Why a packet could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReadError {
    /// Its remaining length is over the limit (the packet is not read).
    #[error("packet of {0} bytes is over the limit")]
    TooLarge(usize),
    /// Not a valid packet.
    #[error("{0}")]
    Malformed(String),
}

/// The largest packet other than PUBLISH taken, whatever the packet size limit: this endpoint
/// needs no large CONNECT (wills are not kept) or SUBSCRIBE (refused anyway), and rumqttc turns
/// each few bytes of a SUBSCRIBE into a 32-byte filter, so a large one would cost ~20 times its
/// size to parse.
pub(crate) const MAX_CONTROL_PACKET: usize = 64 << 10;

/// The remaining length in the fixed header at the start of `buf`, once it is all in.
fn remaining_length(buf: &[u8]) -> Option<usize> {
    let mut len = 0usize;
    for (i, b) in buf.iter().skip(1).take(4).enumerate() {
        len |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Some(len);
        }
    }
    None
}

/// The length of the properties of the MQTT 5 PUBLISH at the start of `buf`, once they are in
/// (`buf` starts with a PUBLISH fixed header).
fn publish_properties_length(buf: &[u8]) -> Option<usize> {
    let header = 1 + buf.iter().skip(1).take(4).position(|b| b & 0x80 == 0)? + 1;
    let topic = usize::from(u16::from_be_bytes([
        *buf.get(header)?,
        *buf.get(header + 1)?,
    ]));
    let qos = (buf[0] >> 1) & 3;
    let at = header + 2 + topic + if qos > 0 { 2 } else { 0 };
    let mut len = 0usize;
    for (i, b) in buf.get(at..)?.iter().take(4).enumerate() {
        len |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Some(len);
        }
    }
    None
}

/// The protocol level a CONNECT frame at the start of `buf` asks for, once enough bytes are in.
/// `Err` when the first packet is not a CONNECT.
pub(crate) fn connect_level(buf: &[u8]) -> Result<Option<u8>, CodecError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first >> 4 != 1 {
        return Err(CodecError::NotConnect(
            rumqttc::mqttbytes::PacketType::Publish,
        ));
    }
    // Fixed header: type byte, 1..4 bytes of remaining length; then the protocol name as a
    // length-prefixed string ("MQTT", or "MQIsdp" for 3.1) and the level byte.
    let mut at = 1;
    loop {
        match buf.get(at) {
            None => return Ok(None),
            Some(b) if b & 0x80 != 0 && at < 4 => at += 1,
            Some(b) if b & 0x80 != 0 => return Err(CodecError::MalformedRemainingLength),
            Some(_) => break,
        }
    }
    at += 1;
    let (Some(&hi), Some(&lo)) = (buf.get(at), buf.get(at + 1)) else {
        return Ok(None);
    };
    let name_len = usize::from(u16::from_be_bytes([hi, lo]));
    Ok(buf.get(at + 2 + name_len).copied())
}

impl Version {
    /// The next packet in `buf`, or `None` until more bytes arrive. A packet over `max` (or a
    /// control packet over [`MAX_CONTROL_PACKET`]) fails as soon as its fixed header is in.
    pub(crate) fn read(
        self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<Incoming>, ReadError> {
        if let (Some(&first), Some(len)) = (buf.first(), remaining_length(buf)) {
            let limit = if first >> 4 == 3 {
                max
            } else {
                max.min(MAX_CONTROL_PACKET)
            };
            if len > limit {
                return Err(ReadError::TooLarge(len));
            }
        }
        let malformed = |e: &dyn std::fmt::Display| ReadError::Malformed(e.to_string());
        match self {
            Version::V311 => match v4::Packet::read(buf, max) {
                Ok(packet) => Ok(Some(from_v4(packet))),
                Err(CodecError::InsufficientBytes(_)) => Ok(None),
                Err(CodecError::PayloadSizeLimitExceeded(len)) => Err(ReadError::TooLarge(len)),
                Err(e) => Err(malformed(&e)),
            },
            Version::V5 => {
                // User properties cost rumqttc ~20 times their size to parse: a PUBLISH's
                // properties are held to what a control packet may be.
                if buf.first().is_some_and(|b| b >> 4 == 3) {
                    if let Some(len) = publish_properties_length(buf) {
                        if len > MAX_CONTROL_PACKET {
                            return Err(ReadError::TooLarge(len));
                        }
                    }
                }
                // rumqttc's v5 reader wants a reason code in DISCONNECT; MQTT 5 allows none.
                if buf.len() >= 2 && buf[0] == 0xE0 && buf[1] == 0 {
                    let _ = buf.split_to(2);
                    return Ok(Some(Incoming::Disconnect));
                }
                match v5::Packet::read(buf, Some(u32::try_from(max).unwrap_or(u32::MAX))) {
                    Ok(packet) => from_v5(packet).map(Some).map_err(|e| malformed(&e)),
                    Err(CodecError5::InsufficientBytes(_)) => Ok(None),
                    Err(CodecError5::PayloadSizeLimitExceeded { pkt_size, .. }) => {
                        Err(ReadError::TooLarge(pkt_size))
                    }
                    Err(e) => Err(malformed(&e)),
                }
            }
        }
    }

    /// Appends `packet` to `buf`.
    pub(crate) fn write(self, packet: Outgoing, buf: &mut BytesMut) -> Result<(), String> {
        match self {
            Version::V311 => {
                let packet = match packet {
                    Outgoing::ConnAck { code, .. } => v4::Packet::ConnAck(v4::ConnAck::new(
                        match code {
                            ConnectCode::Accepted => v4::ConnectReturnCode::Success,
                            ConnectCode::UnsupportedVersion => {
                                v4::ConnectReturnCode::RefusedProtocolVersion
                            }
                            ConnectCode::BadLogin => v4::ConnectReturnCode::BadUserNamePassword,
                            ConnectCode::Unavailable => v4::ConnectReturnCode::ServiceUnavailable,
                        },
                        false,
                    )),
                    Outgoing::Disconnect(_) => return Ok(()),
                    Outgoing::PubAck { pkid, .. } => v4::Packet::PubAck(v4::PubAck::new(pkid)),
                    Outgoing::PubRec { pkid, .. } => v4::Packet::PubRec(v4::PubRec::new(pkid)),
                    Outgoing::PubComp(pkid) => v4::Packet::PubComp(v4::PubComp::new(pkid)),
                    Outgoing::SubAck { pkid, filters } => v4::Packet::SubAck(v4::SubAck::new(
                        pkid,
                        vec![v4::SubscribeReasonCode::Failure; filters],
                    )),
                    Outgoing::UnsubAck { pkid, .. } => {
                        v4::Packet::UnsubAck(v4::UnsubAck::new(pkid))
                    }
                    Outgoing::PingResp => v4::Packet::PingResp,
                };
                packet.write(buf, usize::MAX).map_err(|e| e.to_string())?;
            }
            Version::V5 => {
                let packet = match packet {
                    Outgoing::ConnAck {
                        code,
                        receive_max,
                        server_keep_alive,
                        max_packet_size,
                    } => v5::Packet::ConnAck(v5::ConnAck {
                        session_present: false,
                        code: match code {
                            ConnectCode::Accepted => v5::ConnectReturnCode::Success,
                            ConnectCode::UnsupportedVersion => {
                                v5::ConnectReturnCode::UnsupportedProtocolVersion
                            }
                            ConnectCode::BadLogin => v5::ConnectReturnCode::BadUserNamePassword,
                            ConnectCode::Unavailable => v5::ConnectReturnCode::ServerUnavailable,
                        },
                        properties: Some(v5::ConnAckProperties {
                            receive_max: Some(receive_max),
                            retain_available: Some(0),
                            wildcard_subscription_available: Some(0),
                            subscription_identifiers_available: Some(0),
                            shared_subscription_available: Some(0),
                            session_expiry_interval: None,
                            max_qos: None,
                            max_packet_size: Some(max_packet_size),
                            assigned_client_identifier: None,
                            topic_alias_max: None,
                            reason_string: None,
                            user_properties: Vec::new(),
                            server_keep_alive,
                            response_information: None,
                            server_reference: None,
                            authentication_method: None,
                            authentication_data: None,
                        }),
                    }),
                    Outgoing::PubAck { pkid, reason } => {
                        let mut ack = v5::PubAck::new(pkid, None);
                        ack.reason = match reason {
                            Reason::Success => v5::PubAckReason::Success,
                            Reason::TopicNameInvalid => v5::PubAckReason::TopicNameInvalid,
                            Reason::PayloadFormatInvalid => v5::PubAckReason::PayloadFormatInvalid,
                        };
                        v5::Packet::PubAck(ack)
                    }
                    Outgoing::PubRec { pkid, reason } => {
                        let mut rec = v5::PubRec::new(pkid, None);
                        rec.reason = match reason {
                            Reason::Success => v5::PubRecReason::Success,
                            Reason::TopicNameInvalid => v5::PubRecReason::TopicNameInvalid,
                            Reason::PayloadFormatInvalid => v5::PubRecReason::PayloadFormatInvalid,
                        };
                        v5::Packet::PubRec(rec)
                    }
                    Outgoing::PubComp(pkid) => v5::Packet::PubComp(v5::PubComp::new(pkid, None)),
                    Outgoing::SubAck { pkid, filters } => v5::Packet::SubAck(v5::SubAck {
                        pkid,
                        return_codes: vec![v5::SubscribeReasonCode::NotAuthorized; filters],
                        properties: None,
                    }),
                    Outgoing::UnsubAck { pkid, filters } => v5::Packet::UnsubAck(v5::UnsubAck {
                        pkid,
                        reasons: vec![v5::UnsubAckReason::NoSubscriptionExisted; filters],
                        properties: None,
                    }),
                    Outgoing::PingResp => v5::Packet::PingResp(v5::PingResp),
                    Outgoing::Disconnect(reason) => {
                        // By hand: rumqttc 0.25 writes a property length its remaining length
                        // does not count, leaving a stray byte on the wire. Reason and an empty
                        // property length, both counted, is what every reader takes (rumqttc's
                        // own wants the property length even where the spec allows none).
                        let code = match reason {
                            DisconnectReason::TopicNameInvalid => 0x90,
                        };
                        buf.extend_from_slice(&[0xE0, 0x02, code, 0x00]);
                        return Ok(());
                    }
                };
                packet.write(buf, None).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

fn from_v4(packet: v4::Packet) -> Incoming {
    match packet {
        v4::Packet::Connect(c) => Incoming::Connect {
            client_id: c.client_id,
            keep_alive: c.keep_alive,
            clean: c.clean_session,
            login: c.login.map(|l| (l.username, l.password)),
        },
        v4::Packet::Publish(p) => Incoming::Publish {
            topic: p.topic,
            qos: qos(p.qos),
            pkid: p.pkid,
            payload: p.payload,
        },
        v4::Packet::PubRel(r) => Incoming::PubRel(r.pkid),
        v4::Packet::Subscribe(s) => Incoming::Subscribe {
            pkid: s.pkid,
            filters: s.filters.len(),
        },
        v4::Packet::Unsubscribe(u) => Incoming::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics.len(),
        },
        v4::Packet::PingReq => Incoming::PingReq,
        v4::Packet::Disconnect => Incoming::Disconnect,
        _ => Incoming::Other,
    }
}

fn from_v5(packet: v5::Packet) -> Result<Incoming, CodecError5> {
    Ok(match packet {
        v5::Packet::Connect(c, _, login) => Incoming::Connect {
            client_id: c.client_id,
            keep_alive: c.keep_alive,
            clean: c.clean_start,
            login: login.map(|l| (l.username, l.password)),
        },
        v5::Packet::Publish(p) => {
            // CONNACK allows no topic aliases, so the topic is always there.
            let topic =
                String::from_utf8(p.topic.to_vec()).map_err(|_| CodecError5::TopicNotUtf8)?;
            if topic.is_empty() {
                return Err(CodecError5::MalformedPacket);
            }
            Incoming::Publish {
                topic,
                qos: match p.qos {
                    QoS5::AtMostOnce => 0,
                    QoS5::AtLeastOnce => 1,
                    QoS5::ExactlyOnce => 2,
                },
                pkid: p.pkid,
                payload: p.payload,
            }
        }
        v5::Packet::PubRel(r) => Incoming::PubRel(r.pkid),
        v5::Packet::Subscribe(s) => Incoming::Subscribe {
            pkid: s.pkid,
            filters: s.filters.len(),
        },
        v5::Packet::Unsubscribe(u) => Incoming::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters.len(),
        },
        v5::Packet::PingReq(_) => Incoming::PingReq,
        v5::Packet::Disconnect(_) => Incoming::Disconnect,
        _ => Incoming::Other,
    })
}

fn qos(q: QoS) -> u8 {
    match q {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_rumqttc_writes_and_finds_the_level() {
        let mut buf = BytesMut::new();
        v4::Packet::Connect(v4::Connect::new("car-1"))
            .write(&mut buf, usize::MAX)
            .unwrap();
        assert_eq!(connect_level(&buf).unwrap(), Some(4));
        assert_eq!(connect_level(&buf[..3]).unwrap(), None);
        let mut publish = v4::Publish::new("car/t", QoS::AtLeastOnce, "21.5");
        publish.pkid = 1;
        v4::Packet::Publish(publish)
            .write(&mut buf, usize::MAX)
            .unwrap();
        let mut half = buf.split_to(buf.len() - 2);
        let connect = Version::V311.read(&mut half, 1 << 20).unwrap().unwrap();
        assert!(matches!(connect, Incoming::Connect { ref client_id, .. } if client_id == "car-1"));
        assert!(Version::V311.read(&mut half, 1 << 20).unwrap().is_none());
        half.unsplit(buf);
        let publish = Version::V311.read(&mut half, 1 << 20).unwrap().unwrap();
        assert!(
            matches!(publish, Incoming::Publish { ref topic, qos: 1, .. } if topic == "car/t"),
            "{publish:?}"
        );

        let mut out = BytesMut::new();
        Version::V5
            .write(
                Outgoing::PubAck {
                    pkid: 7,
                    reason: Reason::TopicNameInvalid,
                },
                &mut out,
            )
            .unwrap();
        let v5::Packet::PubAck(ack) = v5::Packet::read(&mut out, None).unwrap() else {
            panic!("not a PUBACK");
        };
        assert_eq!(
            (ack.pkid, ack.reason),
            (7, v5::PubAckReason::TopicNameInvalid)
        );
        Version::V5
            .write(
                Outgoing::PubRec {
                    pkid: 8,
                    reason: Reason::PayloadFormatInvalid,
                },
                &mut out,
            )
            .unwrap();
        let mut disconnect = BytesMut::new();
        Version::V5
            .write(
                Outgoing::Disconnect(DisconnectReason::TopicNameInvalid),
                &mut disconnect,
            )
            .unwrap();
        assert_eq!(&disconnect[..], [0xE0, 0x02, 0x90, 0x00]);
        let v5::Packet::Disconnect(d) = v5::Packet::read(&mut disconnect, None).unwrap() else {
            panic!("not a DISCONNECT");
        };
        assert_eq!(d.reason_code, v5::DisconnectReasonCode::TopicNameInvalid);
        assert!(disconnect.is_empty());
        let v5::Packet::PubRec(rec) = v5::Packet::read(&mut out, None).unwrap() else {
            panic!("not a PUBREC");
        };
        assert_eq!(
            (rec.pkid, rec.reason),
            (8, v5::PubRecReason::PayloadFormatInvalid)
        );
    }

    /// xorshift64*: a deterministic stream of cases that replays from its seed, no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn env_u64(name: &str, default: u64) -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// Valid packets of every kind a client may send, in both versions: what mutations start from.
    fn corpus() -> Vec<BytesMut> {
        let mut out = Vec::new();
        let mut add4 = |p: v4::Packet| {
            let mut b = BytesMut::new();
            p.write(&mut b, usize::MAX).unwrap();
            out.push(b);
        };
        let mut connect = v4::Connect::new("car-1");
        connect.login = Some(v4::Login::new("user", "secret"));
        connect.last_will = Some(v4::LastWill::new(
            "car/will",
            "gone",
            QoS::AtLeastOnce,
            false,
        ));
        add4(v4::Packet::Connect(connect));
        add4(v4::Packet::Connect(v4::Connect::new("")));
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let mut publish = v4::Publish::new("car/1/speed", qos, vec![7u8; 40]);
            publish.pkid = 3;
            add4(v4::Packet::Publish(publish));
        }
        add4(v4::Packet::Subscribe(v4::Subscribe::new(
            "car/#",
            QoS::AtLeastOnce,
        )));
        add4(v4::Packet::Unsubscribe(v4::Unsubscribe::new("car/+")));
        add4(v4::Packet::PubRel(v4::PubRel::new(3)));
        add4(v4::Packet::PubAck(v4::PubAck::new(3)));
        add4(v4::Packet::PingReq);
        add4(v4::Packet::Disconnect);

        let mut add5 = |p: v5::Packet| {
            let mut b = BytesMut::new();
            p.write(&mut b, None).unwrap();
            out.push(b);
        };
        let props = v5::PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            response_topic: Some("car/reply".into()),
            correlation_data: Some(Bytes::from_static(b"c")),
            user_properties: vec![("k".into(), "v".into()), ("a".into(), "b".into())],
            content_type: Some("application/json".into()),
            ..Default::default()
        };
        add5(v5::Packet::Connect(
            v5::Connect {
                keep_alive: 30,
                client_id: "car-2".into(),
                clean_start: true,
                properties: None,
            },
            Some(v5::LastWill::new(
                "car/will",
                "gone",
                QoS5::AtLeastOnce,
                false,
                None,
            )),
            Some(v5::Login::new("user", "secret")),
        ));
        for qos in [QoS5::AtMostOnce, QoS5::AtLeastOnce, QoS5::ExactlyOnce] {
            let mut publish =
                v5::Publish::new("car/2/speed", qos, vec![9u8; 40], Some(props.clone()));
            publish.pkid = 4;
            add5(v5::Packet::Publish(publish));
        }
        add5(v5::Packet::Subscribe(v5::Subscribe::new(
            v5::Filter::new("car/#", QoS5::AtLeastOnce),
            None,
        )));
        add5(v5::Packet::Unsubscribe(v5::Unsubscribe::new("car/+", None)));
        add5(v5::Packet::PubRel(v5::PubRel::new(4, None)));
        add5(v5::Packet::PingReq(v5::PingReq));
        add5(v5::Packet::Disconnect(v5::Disconnect::new(
            v5::DisconnectReasonCode::NormalDisconnection,
        )));
        out
    }

    /// Reads packets from `bytes` with both codecs until one needs more bytes or fails; returns
    /// the most bytes allocated at once on the way.
    fn read_all(bytes: &[u8], max: usize) -> usize {
        let mut worst = 0;
        for version in [Version::V311, Version::V5] {
            let mut buf = BytesMut::from(bytes);
            let ((), peak) = crate::alloc_count::peak(|| {
                let _ = connect_level(&buf);
                // Each packet read takes at least two bytes, so this ends; the bound is a guard.
                for _ in 0..bytes.len() + 1 {
                    match version.read(&mut buf, max) {
                        Ok(Some(packet)) => drop(packet),
                        Ok(None) | Err(_) => break,
                    }
                }
            });
            worst = worst.max(peak);
        }
        worst
    }

    /// What reading one buffer may allocate, beyond the buffer itself: the parsed packet copies
    /// strings (client id, topic, user properties) out of at most [`MAX_CONTROL_PACKET`] bytes
    /// of a control packet or a PUBLISH's properties, some 20 bytes of bookkeeping for each
    /// few bytes of input.
    const PARSE_ALLOC_LIMIT: usize = 24 * MAX_CONTROL_PACKET;

    /// Arbitrary bytes, truncated packets and mutated valid packets: the parser never panics
    /// and never allocates more than [`PARSE_ALLOC_LIMIT`], whatever the bytes say.
    /// `EDDY_MQTT_PARSER_CASES` (default 20,000) and `EDDY_MQTT_PARSER_SEED` set the run.
    #[test]
    fn parser_survives_arbitrary_truncated_and_mutated_input() {
        let cases = env_u64("EDDY_MQTT_PARSER_CASES", 20_000);
        let seed = env_u64("EDDY_MQTT_PARSER_SEED", 0x5EED_2026);
        let mut rng = Rng(seed | 1);
        let corpus = corpus();
        let max = 1 << 20;
        let mut worst = 0;
        for case in 0..cases {
            let mut bytes: Vec<u8> = match case % 4 {
                // Arbitrary bytes, often starting like a packet type.
                0 => (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
                // A valid packet cut anywhere.
                1 => {
                    let packet = &corpus[rng.below(corpus.len())];
                    packet[..rng.below(packet.len() + 1)].to_vec()
                }
                // A valid packet with bytes flipped, inserted or dropped, maybe followed by another.
                _ => {
                    let mut p = corpus[rng.below(corpus.len())].to_vec();
                    for _ in 0..1 + rng.below(4) {
                        let at = rng.below(p.len());
                        match rng.below(3) {
                            0 => p[at] ^= 1 << rng.below(8),
                            1 => p.insert(at, rng.next() as u8),
                            _ if p.len() > 1 => {
                                p.remove(at);
                            }
                            _ => {}
                        }
                    }
                    if rng.below(2) == 0 {
                        p.extend_from_slice(&corpus[rng.below(corpus.len())]);
                    }
                    p
                }
            };
            if case % 16 == 0 && !bytes.is_empty() {
                // A declared length far past what follows (up to the 4-byte maximum).
                bytes.truncate(1);
                bytes.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0x7F]);
            }
            let peak = std::panic::catch_unwind(|| read_all(&bytes, max))
                .unwrap_or_else(|_| panic!("case {case} (seed {seed}) panicked on {bytes:02x?}"));
            assert!(
                peak <= PARSE_ALLOC_LIMIT,
                "case {case} (seed {seed}): {peak} bytes allocated reading {bytes:02x?}"
            );
            worst = worst.max(peak);
        }
        eprintln!("{cases} cases, seed {seed}: at most {worst} bytes allocated by one read");
    }

    /// The packets that cost the most to parse per byte, at their largest: a SUBSCRIBE of empty
    /// filters and an MQTT 5 PUBLISH of empty user properties. Within the limit, or refused.
    #[test]
    fn the_costliest_packets_stay_within_the_parse_limit() {
        let max = 1 << 20;
        // SUBSCRIBE: pkid, then (len 0, options 0) filters, 3 bytes each.
        for body in [MAX_CONTROL_PACKET, 4 * MAX_CONTROL_PACKET] {
            let mut p = vec![0x82];
            let mut len = body;
            loop {
                let mut b = (len & 0x7F) as u8;
                len >>= 7;
                if len > 0 {
                    b |= 0x80;
                }
                p.push(b);
                if len == 0 {
                    break;
                }
            }
            p.extend_from_slice(&[0, 1]);
            p.extend(std::iter::repeat_n([0u8, 0, 0], (body - 2) / 3).flatten());
            p.resize(p.len() + (body - 2) % 3, 0);
            let peak = read_all(&p, max);
            assert!(peak <= PARSE_ALLOC_LIMIT, "SUBSCRIBE of {body}: {peak}");
            let mut buf = BytesMut::from(&p[..]);
            let result = Version::V311.read(&mut buf, max);
            if body > MAX_CONTROL_PACKET {
                assert_eq!(result.unwrap_err(), ReadError::TooLarge(body));
            }
        }
        // MQTT 5 PUBLISH whose properties are all empty user properties (5 bytes each).
        let users = (max - 64) / 5;
        let props = v5::PublishProperties {
            user_properties: vec![(String::new(), String::new()); users],
            ..Default::default()
        };
        let mut out = BytesMut::new();
        v5::Packet::Publish(v5::Publish::new(
            "car/1",
            QoS5::AtMostOnce,
            "x",
            Some(props),
        ))
        .write(&mut out, None)
        .unwrap();
        let peak = read_all(&out, max);
        assert!(
            peak <= PARSE_ALLOC_LIMIT,
            "PUBLISH of {} bytes: {peak}",
            out.len()
        );
        // Refused for its properties on MQTT 5; on 3.1.1 the same bytes are a plain payload.
        let mut buf = out.clone();
        assert!(matches!(
            Version::V5.read(&mut buf, max),
            Err(ReadError::TooLarge(len)) if len > MAX_CONTROL_PACKET
        ));
        let mut buf = out.clone();
        assert!(matches!(
            Version::V311.read(&mut buf, max),
            Ok(Some(Incoming::Publish { .. }))
        ));
    }
}
