//! The few XML documents of S3 that vouch reads and writes: errors, a listing page, the
//! answers to Create and Complete of a multipart upload, and the Complete request body.
//!
//! Reading goes through `roxmltree` (a small, dependency-free, non-validating parser that
//! refuses DTDs with entity definitions by default); elements are matched by local name, so the
//! `xmlns` S3 puts on its documents does not matter. A document that does not parse is an error
//! to the caller, never an empty answer.

use super::client::Listed;

/// An `<Error>` document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDoc {
    /// `<Code>`.
    pub code: String,
    /// `<Message>`, or empty.
    pub message: String,
}

/// One page of `ListObjectsV2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The objects on the page.
    pub objects: Vec<Listed>,
    /// `<IsTruncated>`: more pages follow.
    pub truncated: bool,
    /// `<NextContinuationToken>`.
    pub next: Option<String>,
}

fn parse(body: &[u8]) -> Result<roxmltree::Document<'_>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "not UTF-8".to_owned())?;
    roxmltree::Document::parse(text).map_err(|e| e.to_string())
}

/// The text of the first element called `name` anywhere in `node`.
fn child_text(node: roxmltree::Node<'_, '_>, name: &str) -> Option<String> {
    node.descendants()
        .find(|n| n.is_element() && n.tag_name().name() == name)
        .map(|n| n.text().unwrap_or("").to_owned())
}

/// The text of the first element called `name` in the document.
pub fn text(body: &[u8], name: &str) -> Option<String> {
    let doc = parse(body).ok()?;
    child_text(doc.root(), name)
}

/// The name of a document's root element, when it parses.
pub fn root_name(body: &[u8]) -> Option<String> {
    let doc = parse(body).ok()?;
    let name = doc.root_element().tag_name().name().to_owned();
    Some(name)
}

/// The `<Error>` a body holds, if its root element is one.
pub fn error(body: &[u8]) -> Option<ErrorDoc> {
    let doc = parse(body).ok()?;
    let root = doc.root_element();
    if root.tag_name().name() != "Error" {
        return None;
    }
    Some(ErrorDoc {
        code: child_text(root, "Code").unwrap_or_default(),
        message: child_text(root, "Message").unwrap_or_default(),
    })
}

/// A `ListBucketResult` page.
pub fn list_page(body: &[u8]) -> Result<Page, String> {
    let doc = parse(body)?;
    let root = doc.root_element();
    if root.tag_name().name() != "ListBucketResult" {
        return Err(format!("the root element is <{}>", root.tag_name().name()));
    }
    let mut objects = Vec::new();
    for c in root
        .children()
        .filter(|n| n.is_element() && n.tag_name().name() == "Contents")
    {
        let key = child_text(c, "Key").ok_or("a <Contents> without <Key>")?;
        let size = child_text(c, "Size")
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| format!("{key}: no usable <Size>"))?;
        objects.push(Listed { key, size });
    }
    let truncated = child_text(root, "IsTruncated").is_some_and(|t| t.trim() == "true");
    Ok(Page {
        objects,
        truncated,
        next: child_text(root, "NextContinuationToken").filter(|t| !t.is_empty()),
    })
}

/// A `ListMultipartUploadsResult`: the (key, upload id) of each upload.
pub fn uploads(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let doc = parse(body)?;
    let root = doc.root_element();
    if root.tag_name().name() != "ListMultipartUploadsResult" {
        return Err(format!("the root element is <{}>", root.tag_name().name()));
    }
    root.children()
        .filter(|n| n.is_element() && n.tag_name().name() == "Upload")
        .map(|u| {
            let key = child_text(u, "Key").ok_or("an <Upload> without <Key>")?;
            let id = child_text(u, "UploadId").ok_or("an <Upload> without <UploadId>")?;
            Ok((key, id))
        })
        .collect()
}

/// The `CompleteMultipartUpload` body for parts 1..=N with these ETags.
pub fn complete_body(etags: &[String]) -> String {
    complete_body_with(etags, None)
}

/// [`complete_body`] with each part's `<ChecksumSHA256>` (base64), for an upload created with
/// `x-amz-checksum-algorithm: SHA256`.
pub fn complete_body_with(etags: &[String], sha256s: Option<&[String]>) -> String {
    let mut out = String::from("<CompleteMultipartUpload>");
    for (i, etag) in etags.iter().enumerate() {
        let sum = sha256s
            .and_then(|s| s.get(i))
            .map(|s| format!("<ChecksumSHA256>{}</ChecksumSHA256>", escape(s)))
            .unwrap_or_default();
        out.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><ETag>\"{}\"</ETag>{sum}</Part>",
            i + 1,
            escape(etag)
        ));
    }
    out.push_str("</CompleteMultipartUpload>");
    out
}

/// Escapes text for an XML element.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_inside_a_200_answer_is_found() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message><RequestId>656c76696e6727732072657175657374</RequestId></Error>"#;
        let e = error(body).unwrap();
        assert_eq!(e.code, "InternalError");
        assert!(e.message.starts_with("We encountered"));
        let ok = br#"<CompleteMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>b</Bucket><Key>k</Key><ETag>"3858f62230ac3c915f300c664312c11f-9"</ETag></CompleteMultipartUploadResult>"#;
        assert_eq!(error(ok), None);
        assert_eq!(
            text(ok, "ETag").as_deref(),
            Some("\"3858f62230ac3c915f300c664312c11f-9\"")
        );
        assert_eq!(
            error(b"<Error><Code>x"),
            None,
            "an unparsable body is no error doc"
        );
    }

    #[test]
    fn a_listing_page_parses_with_its_token_and_escaped_keys() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>web1/</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated><Contents><Key>web1/a&amp;b.tar.gz.age</Key><Size>1234</Size></Contents><Contents><Key>web1/c</Key><Size>0</Size></Contents><NextContinuationToken>tok==</NextContinuationToken></ListBucketResult>"#;
        let page = list_page(body).unwrap();
        assert_eq!(page.objects.len(), 2);
        assert_eq!(page.objects[0].key, "web1/a&b.tar.gz.age");
        assert_eq!(page.objects[0].size, 1234);
        assert!(page.truncated);
        assert_eq!(page.next.as_deref(), Some("tok=="));
        assert!(list_page(b"<Error><Code>AccessDenied</Code></Error>").is_err());
        assert!(list_page(
            b"<ListBucketResult><Contents><Key>k</Key></Contents></ListBucketResult>"
        )
        .is_err());
    }

    #[test]
    fn the_complete_body_numbers_the_parts_from_one() {
        let body = complete_body(&["aa".into(), "bb".into()]);
        assert_eq!(
            body,
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"aa\"</ETag></Part><Part><PartNumber>2</PartNumber><ETag>\"bb\"</ETag></Part></CompleteMultipartUpload>"
        );
    }

    #[test]
    fn a_complete_body_names_each_parts_sha256_when_asked() {
        let etags = ["a".to_owned(), "b".to_owned()];
        assert_eq!(
            complete_body_with(&etags, Some(&["x".to_owned(), "y".to_owned()])),
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"a\"</ETag><ChecksumSHA256>x</ChecksumSHA256></Part><Part><PartNumber>2</PartNumber><ETag>\"b\"</ETag><ChecksumSHA256>y</ChecksumSHA256></Part></CompleteMultipartUpload>"
        );
        assert!(!complete_body(&etags).contains("Checksum"));
    }
}
