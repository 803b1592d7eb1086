//! The request body: size limit and `Content-Encoding`.

use std::borrow::Cow;
use std::io::Read;

use flate2::read::MultiGzDecoder;
use http::header::CONTENT_ENCODING;
use http::HeaderMap;

use crate::response::{IngestError, MAX_REQUEST_BYTES};

/// The body as JSON bytes: checked against [`MAX_REQUEST_BYTES`] as sent and, when it is
/// gzip, decompressed with the same hard limit (a zip bomb stops at `MAX_REQUEST_BYTES + 1`).
pub fn decode<'a>(headers: &HeaderMap, raw: &'a [u8]) -> Result<Cow<'a, [u8]>, IngestError> {
    if raw.len() > MAX_REQUEST_BYTES {
        return Err(IngestError::RequestTooLarge { bytes: raw.len() });
    }
    match encoding(headers)? {
        Encoding::Identity => Ok(Cow::Borrowed(raw)),
        Encoding::Gzip => gunzip(raw).map(Cow::Owned),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

/// `Content-Encoding`: absent, `identity`, or one `gzip` (`x-gzip`); anything else is refused.
fn encoding(headers: &HeaderMap) -> Result<Encoding, IngestError> {
    let mut result = Encoding::Identity;
    for value in headers.get_all(CONTENT_ENCODING) {
        let value = value
            .to_str()
            .map_err(|_| IngestError::UnsupportedEncoding {
                encoding: "(not ASCII)".into(),
            })?;
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if token.eq_ignore_ascii_case("identity") {
                continue;
            }
            let gzip = token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip");
            if !gzip || result == Encoding::Gzip {
                return Err(IngestError::UnsupportedEncoding {
                    encoding: value.chars().take(40).collect(),
                });
            }
            result = Encoding::Gzip;
        }
    }
    Ok(result)
}

fn gunzip(compressed: &[u8]) -> Result<Vec<u8>, IngestError> {
    let mut out = Vec::with_capacity((compressed.len() * 8).min(MAX_REQUEST_BYTES + 1));
    MultiGzDecoder::new(compressed)
        .take(MAX_REQUEST_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| IngestError::InvalidGzip {
            reason: e.to_string(),
        })?;
    if out.len() > MAX_REQUEST_BYTES {
        return Err(IngestError::DecompressedTooLarge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use flate2::Compression;
    use http::HeaderValue;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn headers(encoding: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_ENCODING, HeaderValue::from_str(encoding).unwrap());
        headers
    }

    #[test]
    fn plain_bodies_are_borrowed() {
        let body = decode(&HeaderMap::new(), b"{}").unwrap();
        assert!(matches!(body, Cow::Borrowed(b"{}")));
        assert!(matches!(
            decode(&headers("identity"), b"{}").unwrap(),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn gzip_is_decompressed() {
        let data = br#"{"batch": []}"#;
        for name in ["gzip", "GZIP", "x-gzip", "identity, gzip"] {
            assert_eq!(
                &*decode(&headers(name), &gzip(data)).unwrap(),
                data,
                "{name}"
            );
        }
    }

    #[test]
    fn other_encodings_and_broken_gzip_are_refused() {
        assert!(matches!(
            decode(&headers("br"), b"{}"),
            Err(IngestError::UnsupportedEncoding { .. })
        ));
        assert!(matches!(
            decode(&headers("gzip, gzip"), b"{}"),
            Err(IngestError::UnsupportedEncoding { .. })
        ));
        assert!(matches!(
            decode(&headers("gzip"), b"{}"),
            Err(IngestError::InvalidGzip { .. })
        ));
    }

    #[test]
    fn limits_apply_before_and_after_decompression() {
        let big = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert!(matches!(
            decode(&HeaderMap::new(), &big),
            Err(IngestError::RequestTooLarge { bytes }) if bytes == MAX_REQUEST_BYTES + 1
        ));
        let exact = vec![b' '; MAX_REQUEST_BYTES];
        assert_eq!(
            decode(&headers("gzip"), &gzip(&exact)).unwrap().len(),
            exact.len()
        );
        // A bomb: 8 MB of zeros in about 8 KB.
        let bomb = gzip(&vec![0; 8 * 1024 * 1024]);
        assert!(bomb.len() < MAX_REQUEST_BYTES);
        assert!(matches!(
            decode(&headers("gzip"), &bomb),
            Err(IngestError::DecompressedTooLarge)
        ));
    }
}
