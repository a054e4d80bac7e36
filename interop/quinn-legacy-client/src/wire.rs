//! debra's legacy wire format: frames of an 8-byte big-endian length followed by one FlatBuffers
//! buffer (no file identifier) whose root is `Debra.Message` (/schema/debra.fbs).
//!
//! Debian 12 packages no Rust `flatbuffers` crate, so the code that `flatc --rust` generates cannot
//! be compiled offline. This module therefore encodes and decodes the four fields that the legacy
//! protocol uses by hand, following the FlatBuffers binary format (little-endian scalars, a root
//! uoffset, a vtable of u16 field offsets, tables referenced by soffset, 4-byte aligned vectors).
//! tests/flatc_compat.rs checks it against `flatc` and the real schema in both directions.
//!
//! Field slots (the order of declaration in the schema): 0 message_type: byte,
//! 1 client_id: int, 2 for_client: int, 3 message: [ubyte]. Later slots (native extensions) are
//! ignored when decoding and never written.

use std::fmt;

/// `Debra.MessageType.ClientRegistration`.
pub const CLIENT_REGISTRATION: i8 = 0;
/// `Debra.MessageType.ClientToClient`.
pub const CLIENT_TO_CLIENT: i8 = 1;

/// Length of the frame prefix.
pub const PREFIX_LEN: usize = 8;
/// A local sanity limit on a received frame's length, so garbage cannot make us allocate wildly.
pub const MAX_FRAME_LEN: u64 = 64 << 20;

const SLOT_MESSAGE_TYPE: usize = 0;
const SLOT_CLIENT_ID: usize = 1;
const SLOT_FOR_CLIENT: usize = 2;
const SLOT_MESSAGE: usize = 3;

/// The legacy subset of `Debra.Message`. Absent fields read as their schema defaults (0, no vector).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub message_type: i8,
    pub client_id: i32,
    pub for_client: i32,
    pub message: Option<Vec<u8>>,
}

impl Message {
    pub fn registration(client_id: i32) -> Message {
        Message { message_type: CLIENT_REGISTRATION, client_id, for_client: 0, message: None }
    }

    pub fn client_to_client(client_id: i32, for_client: i32, payload: &[u8]) -> Message {
        Message {
            message_type: CLIENT_TO_CLIENT,
            client_id,
            for_client,
            message: Some(payload.to_vec()),
        }
    }

    /// The payload, or an empty slice when the vector is absent.
    pub fn payload(&self) -> &[u8] {
        self.message.as_deref().unwrap_or(&[])
    }
}

/// A buffer that is not a valid `Debra.Message` (as far as the legacy fields go).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid Debra.Message FlatBuffer: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Encodes `m` as a FlatBuffer like the FlatBuffers builders do by default: scalar fields equal to
/// their default (0) are left out, the vtable is trimmed after the last present field, and the
/// `message` vector is written only when it is `Some`.
///
/// Layout (front to back, so every uoffset points forward as the format requires):
/// root uoffset | vtable | pad | table (soffset, 4-byte fields, 1-byte field) | pad | vector
pub fn encode(m: &Message) -> Vec<u8> {
    let present = [
        m.message_type != 0,
        m.client_id != 0,
        m.for_client != 0,
        m.message.is_some(),
    ];
    let nslots = present.iter().rposition(|&p| p).map_or(0, |i| i + 1);
    let vt_pos = 4usize;
    let vt_len = 4 + 2 * nslots;
    let table = align4(vt_pos + vt_len);

    // Field offsets inside the table: 4-byte fields first (aligned), then the byte.
    let mut offsets = [0u16; 4];
    let mut cursor = 4usize; // after the soffset
    for &slot in &[SLOT_CLIENT_ID, SLOT_FOR_CLIENT, SLOT_MESSAGE] {
        if present[slot] {
            offsets[slot] = cursor as u16;
            cursor += 4;
        }
    }
    if present[SLOT_MESSAGE_TYPE] {
        offsets[SLOT_MESSAGE_TYPE] = cursor as u16;
        cursor += 1;
    }
    let table_size = cursor;
    let vector = align4(table + table_size);
    let payload = m.message.as_deref().unwrap_or(&[]);
    let total = if m.message.is_some() { align4(vector + 4 + payload.len()) } else { align4(table + table_size) };

    let mut buf = vec![0u8; total];
    put_u32(&mut buf, 0, table as u32);
    put_u16(&mut buf, vt_pos, vt_len as u16);
    put_u16(&mut buf, vt_pos + 2, table_size as u16);
    for (slot, off) in offsets.iter().enumerate().take(nslots) {
        put_u16(&mut buf, vt_pos + 4 + 2 * slot, *off);
    }
    put_u32(&mut buf, table, (table - vt_pos) as u32); // soffset: vtable = table - soffset
    if present[SLOT_CLIENT_ID] {
        put_u32(&mut buf, table + offsets[SLOT_CLIENT_ID] as usize, m.client_id as u32);
    }
    if present[SLOT_FOR_CLIENT] {
        put_u32(&mut buf, table + offsets[SLOT_FOR_CLIENT] as usize, m.for_client as u32);
    }
    if present[SLOT_MESSAGE_TYPE] {
        buf[table + offsets[SLOT_MESSAGE_TYPE] as usize] = m.message_type as u8;
    }
    if present[SLOT_MESSAGE] {
        let field = table + offsets[SLOT_MESSAGE] as usize;
        put_u32(&mut buf, field, (vector - field) as u32);
        put_u32(&mut buf, vector, payload.len() as u32);
        buf[vector + 4..vector + 4 + payload.len()].copy_from_slice(payload);
    }
    buf
}

/// Encodes `m` as one complete frame: the 8-byte big-endian length, then the buffer.
pub fn encode_frame(m: &Message) -> Vec<u8> {
    let body = encode(m);
    let mut frame = Vec::with_capacity(PREFIX_LEN + body.len());
    frame.extend_from_slice(&(body.len() as u64).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Decodes a buffer, checking bounds and alignment like a FlatBuffers verifier does for the fields
/// it reads. Unknown (later) fields are ignored.
pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
    let err = |s: String| Err(DecodeError(s));
    let table = read_u32(buf, 0, "root offset")? as usize;
    if table % 4 != 0 {
        return err(format!("root table at {} is not 4-byte aligned", table));
    }
    let soffset = read_u32(buf, table, "table soffset")? as i32 as i64;
    let vt = table as i64 - soffset;
    if vt < 0 || vt % 2 != 0 {
        return err(format!("vtable at {} is out of bounds or misaligned", vt));
    }
    let vt = vt as usize;
    let vt_len = read_u16(buf, vt, "vtable length")? as usize;
    let table_size = read_u16(buf, vt + 2, "table size")? as usize;
    if vt_len < 4 || vt_len % 2 != 0 || vt + vt_len > buf.len() {
        return err(format!("bad vtable length {}", vt_len));
    }
    if table_size < 4 || table + table_size > buf.len() {
        return err(format!("bad table size {}", table_size));
    }
    // Position of a field inside the buffer, or None when absent.
    let field = |slot: usize, size: usize| -> Result<Option<usize>, DecodeError> {
        let entry = 4 + 2 * slot;
        if entry + 2 > vt_len {
            return Ok(None);
        }
        let off = u16::from_le_bytes([buf[vt + entry], buf[vt + entry + 1]]) as usize;
        if off == 0 {
            return Ok(None);
        }
        if off < 4 || off + size > table_size {
            return Err(DecodeError(format!("field {} at table offset {} lies outside the table", slot, off)));
        }
        let pos = table + off;
        if pos % size != 0 {
            return Err(DecodeError(format!("field {} at {} is not {}-byte aligned", slot, pos, size)));
        }
        Ok(Some(pos))
    };

    let mut m = Message::default();
    if let Some(p) = field(SLOT_MESSAGE_TYPE, 1)? {
        m.message_type = buf[p] as i8;
    }
    if let Some(p) = field(SLOT_CLIENT_ID, 4)? {
        m.client_id = read_u32(buf, p, "client_id")? as i32;
    }
    if let Some(p) = field(SLOT_FOR_CLIENT, 4)? {
        m.for_client = read_u32(buf, p, "for_client")? as i32;
    }
    if let Some(p) = field(SLOT_MESSAGE, 4)? {
        let uoffset = read_u32(buf, p, "message offset")? as usize;
        if uoffset == 0 {
            return err("message vector offset is 0".to_string());
        }
        let v = p.checked_add(uoffset).filter(|v| v % 4 == 0);
        let v = match v {
            Some(v) => v,
            None => return err("message vector is misaligned".to_string()),
        };
        let n = read_u32(buf, v, "message length")? as usize;
        let end = (v + 4).checked_add(n).filter(|&e| e <= buf.len());
        match end {
            Some(end) => m.message = Some(buf[v + 4..end].to_vec()),
            None => return err(format!("message vector of {} bytes runs past the buffer end", n)),
        }
    }
    Ok(m)
}

fn read_u32(buf: &[u8], pos: usize, what: &str) -> Result<u32, DecodeError> {
    match buf.get(pos..pos.wrapping_add(4)) {
        Some(b) if pos.checked_add(4).is_some() => Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        _ => Err(DecodeError(format!("{} at {} is outside the {}-byte buffer", what, pos, buf.len()))),
    }
}

fn read_u16(buf: &[u8], pos: usize, what: &str) -> Result<u16, DecodeError> {
    match buf.get(pos..pos.wrapping_add(2)) {
        Some(b) if pos.checked_add(2).is_some() => Ok(u16::from_le_bytes([b[0], b[1]])),
        _ => Err(DecodeError(format!("{} at {} is outside the {}-byte buffer", what, pos, buf.len()))),
    }
}

fn put_u32(buf: &mut [u8], pos: usize, v: u32) {
    buf[pos..pos + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u16(buf: &mut [u8], pos: usize, v: u16) {
    buf[pos..pos + 2].copy_from_slice(&v.to_le_bytes());
}

/// Name of a `Debra.ErrorCode` (used in CONNECTION_CLOSE application codes), for messages.
pub fn error_code_name(code: u64) -> &'static str {
    match code {
        0 => "NoError",
        1 => "ProtocolError",
        2 => "FrameTooLarge",
        3 => "NotRegistered",
        4 => "InvalidId",
        5 => "UnknownMessageType",
        6 => "SessionTakenOver",
        7 => "ServerShutdown",
        8 => "RecipientBusy",
        9 => "AlreadyRegistered",
        10 => "InternalError",
        _ => "unknown code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        for m in [
            Message::registration(7),
            Message::registration(0),
            Message::client_to_client(1, 2, b"hello"),
            Message::client_to_client(-5, i32::MAX, b""),
            Message::client_to_client(3, 4, &[0u8; 1001]),
        ] {
            let b = encode(&m);
            assert_eq!(b.len() % 4, 0);
            assert_eq!(decode(&b).unwrap(), m);
        }
    }

    #[test]
    fn frame_prefix_is_big_endian() {
        let f = encode_frame(&Message::client_to_client(1, 2, b"x"));
        let n = u64::from_be_bytes(f[..8].try_into().unwrap()) as usize;
        assert_eq!(n, f.len() - 8);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        let good = encode(&Message::client_to_client(1, 2, b"hello world"));
        for cut in 0..good.len() {
            let _ = decode(&good[..cut]);
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut b = good.clone();
                b[i] = v;
                let _ = decode(&b);
            }
        }
        assert!(decode(&[]).is_err());
        assert!(decode(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
