//! Presigned URLs: AWS Signature Version 4 in the query string, so that a plain `GET` of the
//! URL (`curl URL`) fetches one object until the URL expires, with no key and no header.
//!
//! The URL carries `X-Amz-Algorithm`, `X-Amz-Credential` (`KEY/DATE/REGION/s3/aws4_request`),
//! `X-Amz-Date`, `X-Amz-Expires` (seconds, at most [`MAX_EXPIRES`]), `X-Amz-SignedHeaders`
//! (only `host`), `X-Amz-Security-Token` with a temporary key, and `X-Amz-Signature`. The
//! canonical request is built from the same pieces as a header-signed one ([`super::sigv4`]),
//! with two differences the specification sets: every parameter but the signature is part of
//! the canonical query, and the payload hash is the literal `UNSIGNED-PAYLOAD` (whoever holds
//! the URL downloads; there is no payload to sign).
//!
//! Specification: <https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html>.

use super::sigv4::{
    amz_date, canonical_headers, canonical_query, canonical_request, credential_scope, signature,
    signing_key, string_to_sign, uri_encode_path, Credentials, ALGORITHM,
};
use time::OffsetDateTime;

/// The longest a presigned URL may live: 7 days, as S3 allows.
pub const MAX_EXPIRES: u64 = 7 * 86_400;

/// The payload hash of a presigned request.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// One object to presign a `GET` for.
#[derive(Debug, Clone, Copy)]
pub struct Get<'a> {
    /// The `Host` the URL names (`BUCKET.HOST` in virtual-host style).
    pub host: &'a str,
    /// The unencoded path, starting with `/` (`/BUCKET/KEY` in path style).
    pub path: &'a str,
    /// The signing region.
    pub region: &'a str,
    /// Seconds the URL is good for, from 1 to [`MAX_EXPIRES`].
    pub expires: u64,
}

/// A presigned request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presigned {
    /// The encoded path and query to append to the endpoint (`scheme://host`).
    pub path_and_query: String,
    /// The canonical request, for diagnostics.
    pub canonical_request: String,
    /// The hex signature.
    pub signature: String,
}

/// Presigns a `GET` of `get.path` as made at `now`.
pub fn presign_get(credentials: &Credentials, get: &Get<'_>, now: OffsetDateTime) -> Presigned {
    let date_time = amz_date(now);
    let date = &date_time[..8];
    let scope = credential_scope(date, get.region, "s3");
    let credential = format!("{}/{scope}", credentials.access_key_id);
    let expires = get.expires.to_string();
    let mut query: Vec<(&str, &str)> = vec![
        ("X-Amz-Algorithm", ALGORITHM),
        ("X-Amz-Credential", &credential),
        ("X-Amz-Date", &date_time),
        ("X-Amz-Expires", &expires),
        ("X-Amz-SignedHeaders", "host"),
    ];
    if let Some(token) = &credentials.session_token {
        query.push(("X-Amz-Security-Token", token));
    }
    let (canonical_headers, signed_headers) = canonical_headers(&[("host", get.host)]);
    let path = uri_encode_path(get.path);
    let query = canonical_query(&query);
    let canonical_request = canonical_request(
        "GET",
        &path,
        &query,
        &canonical_headers,
        &signed_headers,
        UNSIGNED_PAYLOAD,
    );
    let to_sign = string_to_sign(&date_time, &scope, &canonical_request);
    let key = signing_key(&credentials.secret_access_key, date, get.region, "s3");
    let signature = signature(&key, &to_sign);
    Presigned {
        path_and_query: format!("{path}?{query}&X-Amz-Signature={signature}"),
        canonical_request,
        signature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_key(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: token.map(str::to_owned),
        }
    }

    /// Amazon S3 API Reference, "Authenticating Requests: Using Query Parameters (AWS
    /// Signature Version 4)" (sigv4-query-string-auth.html): the published example URL.
    #[test]
    fn the_published_presigned_url_example_signs_the_same() {
        let get = Get {
            host: "examplebucket.s3.amazonaws.com",
            path: "/test.txt",
            region: "us-east-1",
            expires: 86_400,
        };
        let now = time::macros::datetime!(2013-05-24 00:00:00 UTC);
        let p = presign_get(&example_key(None), &get, now);
        assert_eq!(
            p.canonical_request,
            "GET\n/test.txt\nX-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\nhost:examplebucket.s3.amazonaws.com\n\nhost\nUNSIGNED-PAYLOAD"
        );
        assert_eq!(
            p.signature,
            "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
        assert_eq!(
            p.path_and_query,
            "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn a_session_token_is_signed_in_the_query() {
        let get = Get {
            host: "h",
            path: "/b/k",
            region: "r",
            expires: 60,
        };
        let now = time::macros::datetime!(2013-05-24 00:00:00 UTC);
        let plain = presign_get(&example_key(None), &get, now);
        let with = presign_get(&example_key(Some("tok/en+")), &get, now);
        assert!(
            with.canonical_request
                .contains("&X-Amz-Security-Token=tok%2Fen%2B"),
            "{}",
            with.canonical_request
        );
        assert!(with
            .path_and_query
            .contains("X-Amz-Security-Token=tok%2Fen%2B&"));
        assert_ne!(plain.signature, with.signature);
    }
}
