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
        accepted: bool,
        /// MQTT 5: the most QoS 1/2 publishes the client may have unacknowledged.
        receive_max: u16,
    },
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
    /// The next packet in `buf`, or `None` until more bytes arrive.
    pub(crate) fn read(self, buf: &mut BytesMut, max: usize) -> Result<Option<Incoming>, String> {
        match self {
            Version::V311 => match v4::Packet::read(buf, max) {
                Ok(packet) => Ok(Some(from_v4(packet))),
                Err(CodecError::InsufficientBytes(_)) => Ok(None),
                Err(e) => Err(e.to_string()),
            },
            Version::V5 => {
                // rumqttc's v5 reader wants a reason code in DISCONNECT; MQTT 5 allows none.
                if buf.len() >= 2 && buf[0] == 0xE0 && buf[1] == 0 {
                    let _ = buf.split_to(2);
                    return Ok(Some(Incoming::Disconnect));
                }
                match v5::Packet::read(buf, Some(u32::try_from(max).unwrap_or(u32::MAX))) {
                    Ok(packet) => from_v5(packet).map(Some).map_err(|e| e.to_string()),
                    Err(CodecError5::InsufficientBytes(_)) => Ok(None),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }

    /// Appends `packet` to `buf`.
    pub(crate) fn write(self, packet: Outgoing, buf: &mut BytesMut) -> Result<(), String> {
        match self {
            Version::V311 => {
                let packet = match packet {
                    Outgoing::ConnAck { accepted, .. } => v4::Packet::ConnAck(v4::ConnAck::new(
                        if accepted {
                            v4::ConnectReturnCode::Success
                        } else {
                            v4::ConnectReturnCode::RefusedProtocolVersion
                        },
                        false,
                    )),
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
                        accepted,
                        receive_max,
                    } => v5::Packet::ConnAck(v5::ConnAck {
                        session_present: false,
                        code: if accepted {
                            v5::ConnectReturnCode::Success
                        } else {
                            v5::ConnectReturnCode::UnsupportedProtocolVersion
                        },
                        properties: Some(v5::ConnAckProperties {
                            receive_max: Some(receive_max),
                            retain_available: Some(0),
                            wildcard_subscription_available: Some(0),
                            subscription_identifiers_available: Some(0),
                            shared_subscription_available: Some(0),
                            session_expiry_interval: None,
                            max_qos: None,
                            max_packet_size: None,
                            assigned_client_identifier: None,
                            topic_alias_max: None,
                            reason_string: None,
                            user_properties: Vec::new(),
                            server_keep_alive: None,
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
        v5::Packet::Connect(c, _, _) => Incoming::Connect {
            client_id: c.client_id,
            keep_alive: c.keep_alive,
            clean: c.clean_start,
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
        let v5::Packet::PubRec(rec) = v5::Packet::read(&mut out, None).unwrap() else {
            panic!("not a PUBREC");
        };
        assert_eq!(
            (rec.pkid, rec.reason),
            (8, v5::PubRecReason::PayloadFormatInvalid)
        );
    }
}
