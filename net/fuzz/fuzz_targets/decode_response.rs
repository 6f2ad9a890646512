//! Response direction: the first two bytes pick the API key and the next two the
//! version; the rest is a response header v1 plus body (as a client or a follower
//! decodes it). Whatever decodes must re-encode stably.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use spate_net::messages::ResponseHeader;
use spate_net::{Encoder, Message, ResponseBody};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let key = i16::from_be_bytes([data[0], data[1]]).rem_euclid(100);
    let version = i16::from_be_bytes([data[2], data[3]]).rem_euclid(20);
    let mut b = Bytes::copy_from_slice(&data[4..]);
    let hv = spate_net::response_header_version(key, version);
    if ResponseHeader::decode(&mut b, hv).is_err() {
        return;
    }
    if let Ok(body) = ResponseBody::decode(key, version, &mut b) {
        let mut e = Encoder::new();
        body.encode(&mut e, version);
        let first = Bytes::from(e.finish().concat());
        let again = ResponseBody::decode(key, version, &mut first.clone())
            .expect("re-encoded response must decode");
        let mut e = Encoder::new();
        again.encode(&mut e, version);
        assert_eq!(Bytes::from(e.finish().concat()), first);
    }
});
