//! Reading a `$batch` body: `multipart/mixed` parts between `--<boundary>` delimiter lines, each an
//! HTTP request (`Content-Type: application/http`, `Content-Transfer-Encoding: binary`) or a
//! changeset (`Content-Type: multipart/mixed; boundary=...`) of such requests.
//!
//! The whole body is read before any request runs, as the service's batch handler reads it, so a
//! body it cannot read runs nothing. The refusals carry the words of the `OData` library's batch
//! reader (`Microsoft.OData.Core`), which Dataverse passes on.
//!
//! Line breaks are read leniently, CRLF or a bare LF, as the library reads them, but every bare LF
//! in the structure (delimiter lines, part headers, request lines and headers) is noted, and so is a
//! closing delimiter without the CRLF after it: Dataverse cannot read such a body's last request
//! (Microsoft Learn, "Troubleshoot Dataverse Web API client errors", Stream was not readable), and
//! [`super`] answers accordingly. A request's own body is opaque here: JSON with bare LFs in it is
//! fine.

use std::collections::HashSet;

use bytes::Bytes;
use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};

/// The most requests one batch may hold, those in changesets included (Microsoft Learn, "Execute
/// batch operations using the Web API": "up to 1000 individual requests").
pub const MAX_REQUESTS: usize = 1000;

/// A batch, read.
#[derive(Debug)]
pub struct Batch {
    pub items: Vec<Item>,
    /// Every line break of the structure was a CRLF, and so was the one after the closing
    /// delimiter.
    pub crlf: bool,
}

/// A top-level part.
#[derive(Debug)]
pub enum Item {
    Request(Part),
    Changeset(Vec<Part>),
}

/// One request.
#[derive(Debug)]
pub struct Part {
    /// The part's `Content-ID`, which later parts of its changeset name as `$<id>`.
    pub content_id: Option<String>,
    pub method: String,
    /// As written: an absolute URL, a path, a path relative to the service root, or `$<id>...`.
    pub url: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why a batch body cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error(
        "The content type '{0}' specifies a batch payload; however, the payload either does not include a batch boundary or includes more than one boundary. In OData, batch payload content types must specify exactly one batch boundary in the 'boundary' parameter of the content type."
    )]
    Boundary(String),
    /// Also what a body gets whose delimiters are not the boundary's: the reader looks for the
    /// boundary until the body ends.
    #[error("Encountered an unexpected end of input while reading the batch payload.")]
    UnexpectedEnd,
    #[error(
        "The message header '{0}' is invalid. The header value must be of the format '<header name>: <header value>'."
    )]
    InvalidHeader(String),
    #[error(
        "The header '{0}' was specified multiple times. Each header must appear only once in a batch part."
    )]
    DuplicateHeader(String),
    #[error(
        "The 'Content-Type' header is missing. The 'Content-Type' header must be specified for each MIME part of a batch message."
    )]
    MissingContentType,
    #[error(
        "The 'Content-Type' header value '{0}' is invalid. When this is the start of the change set, the value must be 'multipart/mixed'; otherwise it must be 'application/http'."
    )]
    InvalidContentType(String),
    #[error(
        "A missing or invalid 'Content-Transfer-Encoding' header was found. The 'Content-Transfer-Encoding' header must be specified for each batch operation, and its value must be 'binary'."
    )]
    TransferEncoding,
    #[error("Nested change sets in a batch payload are not supported.")]
    NestedChangeset,
    #[error(
        "The request line '{0}' is invalid. The request line at the start of each operation must be of the format 'HttpMethod RequestUrl HttpVersion'."
    )]
    RequestLine(String),
    #[error(
        "The HTTP version '{0}' used in a batch operation request or response is not valid. The value must be 'HTTP/1.1'."
    )]
    HttpVersion(String),
    #[error(
        "An invalid HTTP method '{0}' was detected for a request in a change set. Requests in change sets only support the HTTP methods 'POST', 'PUT', 'DELETE', and 'PATCH'."
    )]
    QueryInChangeset(String),
    #[error(
        "The content ID '{0}' was found more than once in the same change set or same batch request. Content IDs have to be unique across all operations of a change set for OData V4.0 and have to be unique across all operations in the whole batch request for OData V4.01."
    )]
    DuplicateContentId(String),
    /// The emulator's wording, after the library's: Dataverse documents the limit, not its error.
    #[error(
        "The current batch message contains too many requests. A maximum number of '{MAX_REQUESTS}' requests, those in change sets included, are allowed in a batch message."
    )]
    TooManyRequests,
    /// The emulator's wording: Dataverse documents that batches cannot be nested, not its error.
    #[error("Batches cannot be nested: the request '{0}' inside the batch is addressed to $batch.")]
    NestedBatch(String),
}

/// What a part's (or the batch's) `Content-Type` says it holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Media {
    Http,
    /// `multipart/mixed`, with its boundary when it names exactly one.
    Multipart(Option<String>),
    Other,
}

pub fn media(content_type: &str) -> Media {
    let mut pieces = content_type.split(';');
    let kind = pieces.next().unwrap_or_default().trim();
    if kind.eq_ignore_ascii_case("application/http") {
        return Media::Http;
    }
    if !kind.eq_ignore_ascii_case("multipart/mixed") {
        return Media::Other;
    }
    let boundaries: Vec<&str> = pieces
        .filter_map(|p| p.split_once('='))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value.trim().trim_matches('"'))
        .collect();
    // RFC 2046: a boundary is 1 to 70 characters.
    match boundaries.as_slice() {
        [one] if (1..=70).contains(&one.len()) => Media::Multipart(Some((*one).to_owned())),
        _ => Media::Multipart(None),
    }
}

/// Reads a batch body delimited by `boundary`.
pub fn read(body: &[u8], boundary: &str) -> Result<Batch, ReadError> {
    let mut crlf = true;
    let mut items = Vec::new();
    let mut requests = 0usize;
    let mut count = |n: usize| {
        requests += n;
        if requests > MAX_REQUESTS {
            return Err(ReadError::TooManyRequests);
        }
        Ok(())
    };
    for part in split(body, boundary, true, &mut crlf)? {
        let (headers, content) = head(part, &mut crlf)?;
        let part_type = content_type(&headers)?;
        match media(part_type) {
            Media::Http => {
                count(1)?;
                items.push(Item::Request(request(&headers, content, &mut crlf)?));
            }
            Media::Multipart(Some(inner)) => {
                let mut parts = Vec::new();
                let mut ids = HashSet::new();
                for part in split(content, &inner, false, &mut crlf)? {
                    let (headers, content) = head(part, &mut crlf)?;
                    let content_type = content_type(&headers)?;
                    match media(content_type) {
                        Media::Http => {}
                        Media::Multipart(_) => return Err(ReadError::NestedChangeset),
                        Media::Other => {
                            return Err(ReadError::InvalidContentType(content_type.to_owned()));
                        }
                    }
                    count(1)?;
                    let part = request(&headers, content, &mut crlf)?;
                    if part.method == "GET" {
                        return Err(ReadError::QueryInChangeset(part.method));
                    }
                    if let Some(id) = &part.content_id
                        && !ids.insert(id.clone())
                    {
                        return Err(ReadError::DuplicateContentId(id.clone()));
                    }
                    parts.push(part);
                }
                items.push(Item::Changeset(parts));
            }
            Media::Multipart(None) => return Err(ReadError::Boundary(part_type.to_owned())),
            Media::Other => return Err(ReadError::InvalidContentType(part_type.to_owned())),
        }
    }
    Ok(Batch { items, crlf })
}

/// How a line ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Crlf,
    Lf,
    End,
}

/// The line of `text` starting at `start`: where its content ends, where the next line starts, and
/// how it ended.
fn line(text: &[u8], start: usize) -> (usize, usize, Ending) {
    match text[start..].iter().position(|b| *b == b'\n') {
        Some(i) => {
            let at = start + i;
            if at > start && text[at - 1] == b'\r' {
                (at - 1, at + 1, Ending::Crlf)
            } else {
                (at, at + 1, Ending::Lf)
            }
        }
        None => (text.len(), text.len(), Ending::End),
    }
}

/// Whether a line is a delimiter of `delimiter` (`--boundary`), and a closing one.
fn delimiter_kind(line: &[u8], delimiter: &[u8]) -> Option<bool> {
    let rest = line.strip_prefix(delimiter)?;
    let (close, rest) = match rest.strip_prefix(b"--") {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    // Transport padding after a delimiter is allowed (RFC 2046); anything else makes it an ordinary
    // line that merely starts like one.
    rest.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r'))
        .then_some(close)
}

/// The contents of the parts between `--boundary` lines. The line break before a delimiter line
/// belongs to the delimiter. At the top level the closing delimiter must end in a CRLF; inside a
/// changeset the top level's next delimiter has taken that break, so it may end the text.
fn split<'a>(
    body: &'a [u8],
    boundary: &str,
    top: bool,
    crlf: &mut bool,
) -> Result<Vec<&'a [u8]>, ReadError> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut parts = Vec::new();
    let mut open: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let (end, next, ending) = line(body, pos);
        if let Some(close) = delimiter_kind(&body[pos..end], delimiter) {
            let before = if pos >= 2 && &body[pos - 2..pos] == b"\r\n" {
                pos - 2
            } else if pos >= 1 {
                *crlf = false;
                pos - 1
            } else {
                pos
            };
            if let Some(start) = open {
                parts.push(&body[start..before.max(start)]);
            }
            match ending {
                Ending::Crlf => {}
                Ending::Lf => *crlf = false,
                Ending::End if close => *crlf &= !top,
                Ending::End => return Err(ReadError::UnexpectedEnd),
            }
            if close {
                return Ok(parts);
            }
            open = Some(next);
        }
        pos = next;
    }
    Err(ReadError::UnexpectedEnd)
}

/// Header lines as names and values, in order.
type Headers = Vec<(String, String)>;

/// Header lines up to the first empty line, and what follows it.
fn head<'a>(part: &'a [u8], crlf: &mut bool) -> Result<(Headers, &'a [u8]), ReadError> {
    let mut headers: Headers = Vec::new();
    let mut pos = 0;
    loop {
        let (end, next, ending) = line(part, pos);
        if ending == Ending::Lf {
            *crlf = false;
        }
        let text = &part[pos..end];
        if text.is_empty() {
            return Ok((headers, &part[next..]));
        }
        let text = String::from_utf8_lossy(text);
        let Some((name, value)) = text.split_once(':') else {
            return Err(ReadError::InvalidHeader(text.into_owned()));
        };
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(ReadError::InvalidHeader(text.into_owned()));
        }
        if headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Err(ReadError::DuplicateHeader(name.to_owned()));
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
        if ending == Ending::End {
            return Ok((headers, &part[next..]));
        }
        pos = next;
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn content_type(headers: &[(String, String)]) -> Result<&str, ReadError> {
    header(headers, "content-type").ok_or(ReadError::MissingContentType)
}

/// An `application/http` part: its MIME headers, then the request line, headers and body.
fn request(mime: &[(String, String)], content: &[u8], crlf: &mut bool) -> Result<Part, ReadError> {
    if !header(mime, "content-transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("binary"))
    {
        return Err(ReadError::TransferEncoding);
    }
    let content_id = header(mime, "content-id").map(str::to_owned);
    let (end, next, ending) = line(content, 0);
    if ending == Ending::Lf {
        *crlf = false;
    }
    let request_line = String::from_utf8_lossy(&content[..end]).into_owned();
    let [method, url, version] = request_line.split(' ').collect::<Vec<_>>()[..] else {
        return Err(ReadError::RequestLine(request_line));
    };
    if method.is_empty() || url.is_empty() {
        return Err(ReadError::RequestLine(request_line));
    }
    if version != "HTTP/1.1" {
        return Err(ReadError::HttpVersion(version.to_owned()));
    }
    let path = url.split(['?', '#']).next().unwrap_or(url);
    if path == "$batch" || path.ends_with("/$batch") {
        return Err(ReadError::NestedBatch(url.to_owned()));
    }
    let (lines, body) = head(&content[next..], crlf)?;
    let mut headers = HeaderMap::new();
    for (name, value) in lines {
        let invalid = || ReadError::InvalidHeader(format!("{name}: {value}"));
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let value = HeaderValue::from_str(&value).map_err(|_| invalid())?;
        headers.append(name, value);
    }
    Ok(Part {
        content_id,
        method: method.to_owned(),
        url: url.to_owned(),
        headers,
        body: Bytes::copy_from_slice(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(text: &str) -> Result<Batch, ReadError> {
        read(text.as_bytes(), "batch_1")
    }

    const CREATE: &str = "--batch_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nPOST /api/data/v9.2/accounts HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{\"name\":\"a\"}\r\n";

    #[test]
    fn reads_a_request_with_its_headers_and_body() {
        let read = batch(&format!("{CREATE}--batch_1--\r\n")).unwrap();
        assert!(read.crlf);
        let [Item::Request(part)] = read.items.as_slice() else {
            panic!("{read:?}");
        };
        assert_eq!(
            (part.method.as_str(), part.url.as_str()),
            ("POST", "/api/data/v9.2/accounts")
        );
        assert_eq!(part.headers["content-type"], "application/json");
        assert_eq!(&part.body[..], b"{\"name\":\"a\"}");
    }

    #[test]
    fn notes_bare_line_feeds_and_a_missing_final_crlf() {
        let missing = batch(&format!("{CREATE}--batch_1--")).unwrap();
        assert!(!missing.crlf);
        let bare = batch(&format!("{CREATE}--batch_1--\r\n").replace("\r\n", "\n")).unwrap();
        assert!(!bare.crlf);
        // A body's own line feeds are its business.
        let pretty = CREATE.replace("{\"name\":\"a\"}", "{\n  \"name\": \"a\"\n}");
        assert!(batch(&format!("{pretty}--batch_1--\r\n")).unwrap().crlf);
    }

    #[test]
    fn refuses_what_the_library_refuses() {
        assert_eq!(
            batch(&format!("{CREATE}--batch_1--\r\n").replace("batch_1", "batch_2")).unwrap_err(),
            ReadError::UnexpectedEnd
        );
        assert_eq!(batch(CREATE).unwrap_err(), ReadError::UnexpectedEnd);
        assert_eq!(
            batch(&format!(
                "{}--batch_1--\r\n",
                CREATE.replace("HTTP/1.1\r\nContent-Type", "HTTP/2\r\nContent-Type")
            ))
            .unwrap_err(),
            ReadError::HttpVersion("HTTP/2".into())
        );
        assert_eq!(
            batch(&format!(
                "{}--batch_1--\r\n",
                CREATE.replace("Content-Transfer-Encoding: binary\r\n", "")
            ))
            .unwrap_err(),
            ReadError::TransferEncoding
        );
    }

    #[test]
    fn reads_boundaries_quoted_or_not() {
        assert_eq!(
            media("multipart/mixed; boundary=\"batch_x\""),
            Media::Multipart(Some("batch_x".into()))
        );
        assert_eq!(
            media("Multipart/Mixed;boundary=batch_x"),
            Media::Multipart(Some("batch_x".into()))
        );
        assert_eq!(media("multipart/mixed"), Media::Multipart(None));
        assert_eq!(media("application/json"), Media::Other);
    }
}
