//! The `multipart/mixed` bodies of `$batch`, as Microsoft Learn's "Execute batch operations using the
//! Web API" describes them: parts separated by `--<boundary>` lines, CRLF line endings, each part an
//! HTTP request (or, in an answer, an HTTP response) with `Content-Type: application/http`.

/// One response inside a batch answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartResponse {
    /// The part's `Content-ID`, which ties it to the request it answers.
    pub(crate) content_id: Option<u32>,
    pub(crate) status: u16,
    /// The embedded response's headers, names lower-cased.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl PartResponse {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The `boundary` parameter of a `multipart/mixed` content type.
pub(crate) fn boundary(content_type: &str) -> Option<&str> {
    let (kind, parameters) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    parameters.split(';').find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// Every HTTP response in a batch answer, changesets opened, in order.
pub(crate) fn responses(body: &[u8], boundary: &str) -> Vec<PartResponse> {
    let mut found = Vec::new();
    for part in parts(body, boundary) {
        let (headers, content) = split_head(part);
        let content_type = header(&headers, "content-type").unwrap_or_default();
        if let Some(inner) = self::boundary(&content_type) {
            found.extend(responses(content, inner));
            continue;
        }
        let content_id = header(&headers, "content-id").and_then(|v| v.trim().parse().ok());
        if let Some(mut response) = http_response(content) {
            response.content_id = content_id;
            found.push(response);
        }
    }
    found
}

/// The bytes between `--boundary` delimiter lines, without the closing `--boundary--`.
fn parts<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    while let Some(at) = find(&body[i..], delimiter) {
        let start = i + at;
        // A delimiter starts a line.
        if start == 0 || body[start - 1] == b'\n' {
            starts.push(start);
        }
        i = start + delimiter.len();
    }
    let mut parts = Vec::new();
    for (n, &start) in starts.iter().enumerate() {
        let after = start + delimiter.len();
        if body[after..].starts_with(b"--") {
            break;
        }
        let end = starts.get(n + 1).copied().unwrap_or(body.len());
        let content = &body[after..end];
        // The line break after the delimiter and the one before the next belong to the delimiters.
        let content = content
            .strip_prefix(b"\r\n")
            .or_else(|| content.strip_prefix(b"\n"))
            .unwrap_or(content);
        let content = content
            .strip_suffix(b"\r\n")
            .or_else(|| content.strip_suffix(b"\n"))
            .unwrap_or(content);
        parts.push(content);
    }
    parts
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Headers up to the first blank line, and what follows it.
fn split_head(part: &[u8]) -> (Vec<(String, String)>, &[u8]) {
    let (head, rest) = match find(part, b"\r\n\r\n") {
        Some(at) => (&part[..at], &part[at + 4..]),
        None => match find(part, b"\n\n") {
            Some(at) => (&part[..at], &part[at + 2..]),
            None => (part, &[][..]),
        },
    };
    let headers = String::from_utf8_lossy(head)
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect();
    (headers, rest)
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// `HTTP/1.1 201 Created`, headers, a blank line, the body.
fn http_response(content: &[u8]) -> Option<PartResponse> {
    let line_end = find(content, b"\n")?;
    let status_line = String::from_utf8_lossy(&content[..line_end]);
    let status = status_line.split_whitespace().nth(1)?.parse::<u16>().ok()?;
    let (headers, body) = split_head(&content[line_end + 1..]);
    let body = body.strip_suffix(b"\r\n").unwrap_or(body);
    Some(PartResponse {
        content_id: None,
        status,
        headers,
        body: body.to_vec(),
    })
}

/// A request inside a changeset.
pub(crate) struct PartRequest<'a> {
    pub(crate) content_id: u32,
    pub(crate) method: &'a str,
    /// Absolute, or a `$n` reference to an earlier part's new row.
    pub(crate) target: &'a str,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Option<Vec<u8>>,
}

/// A batch holding one changeset of `requests`, with its content type.
pub(crate) fn changeset(requests: &[PartRequest<'_>], id: &str) -> (String, Vec<u8>) {
    let batch = format!("batch_{id}");
    let changeset = format!("changeset_{id}");
    let mut out = Vec::new();
    out.extend_from_slice(
        format!("--{batch}\r\nContent-Type: multipart/mixed; boundary=\"{changeset}\"\r\n\r\n")
            .as_bytes(),
    );
    for request in requests {
        out.extend_from_slice(
            format!(
                "--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: {}\r\n\r\n{} {} HTTP/1.1\r\n",
                request.content_id, request.method, request.target
            )
            .as_bytes(),
        );
        for (name, value) in &request.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        if let Some(body) = &request.body {
            out.extend_from_slice(body);
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{changeset}--\r\n--{batch}--\r\n").as_bytes());
    (format!("multipart/mixed; boundary=\"{batch}\""), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_responses_of_a_changeset_answer() {
        let body = "--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_2\r\n\r\n\
--changesetresponse_2\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 1\r\n\r\n\
HTTP/1.1 204 No Content\r\nOData-Version: 4.0\r\nOData-EntityId: https://o/api/data/v9.2/accounts(6d81597f-0000-4000-8000-000000000001)\r\n\r\n\r\n\
--changesetresponse_2\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 2\r\n\r\n\
HTTP/1.1 412 Precondition Failed\r\nContent-Type: application/json; odata.metadata=minimal\r\n\r\n{\"error\":{\"code\":\"0x80060882\",\"message\":\"stale\"}}\r\n\
--changesetresponse_2--\r\n--batchresponse_1--\r\n";
        let found = responses(body.as_bytes(), "batchresponse_1");
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].content_id, found[0].status), (Some(1), 204));
        assert!(
            found[0]
                .header("odata-entityid")
                .unwrap()
                .ends_with("0001)")
        );
        assert_eq!((found[1].content_id, found[1].status), (Some(2), 412));
        assert!(found[1].body.starts_with(b"{\"error\""));
        assert_eq!(
            boundary("multipart/mixed; boundary=\"batchresponse_1\""),
            Some("batchresponse_1")
        );
        assert_eq!(boundary("application/json"), None);
    }

    #[test]
    fn a_changeset_is_written_with_crlf_and_content_ids() {
        let requests = [PartRequest {
            content_id: 1,
            method: "POST",
            target: "https://o/api/data/v9.2/accounts",
            headers: vec![("Content-Type", "application/json; type=entry".into())],
            body: Some(b"{\"name\":\"x\"}".to_vec()),
        }];
        let (content_type, body) = changeset(&requests, "abc");
        assert_eq!(content_type, "multipart/mixed; boundary=\"batch_abc\"");
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with("--batch_abc\r\nContent-Type: multipart/mixed; boundary=\"changeset_abc\"\r\n\r\n--changeset_abc\r\n"));
        assert!(text.contains("Content-ID: 1\r\n\r\nPOST https://o/api/data/v9.2/accounts HTTP/1.1\r\nContent-Type: application/json; type=entry\r\n\r\n{\"name\":\"x\"}\r\n"));
        assert!(text.ends_with("--changeset_abc--\r\n--batch_abc--\r\n"));
        assert!(!text.replace("\r\n", "").contains('\n'), "only CRLF");
    }
}
