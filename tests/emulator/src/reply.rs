//! Responses, and the error envelope every Web API failure uses:
//! `{"error": {"code": "0x...", "message": "..."}}`.

use serde_json::{Value, json};

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// The URL of the row a create, update or upsert wrote, by id. Never sent: it is what a later
    /// part of a `$batch` changeset names as `$n` (`crate::api::batch`), and a write answered with
    /// `return=representation` carries no `OData-EntityId` to read it from.
    pub location: Option<String>,
}

impl Reply {
    pub fn json(status: u16, body: &Value) -> Self {
        Self::raw_json(status, body.to_string().into_bytes())
    }

    /// A body already serialised (pages are written straight into a buffer).
    pub fn raw_json(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![
                (
                    "content-type",
                    "application/json; odata.metadata=minimal".to_owned(),
                ),
                ("odata-version", "4.0".to_owned()),
            ],
            body,
            location: None,
        }
    }

    pub fn empty(status: u16) -> Self {
        Self {
            status,
            headers: vec![("odata-version", "4.0".to_owned())],
            body: Vec::new(),
            location: None,
        }
    }

    pub fn text(status: u16, body: String) -> Self {
        Self {
            status,
            headers: vec![("content-type", "text/plain".to_owned())],
            body: body.into_bytes(),
            location: None,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn with_location(mut self, url: String) -> Self {
        self.location = Some(url);
        self
    }

    /// A refusal from the HTTP front end (HTTP.sys on the real service), before the request reaches
    /// the `OData` layer: a small HTML page, not the JSON error envelope. Dataverse does not document
    /// the body; it is modelled on the pages HTTP.sys itself sends.
    pub fn front_end(status: u16, title: &str, detail: &str) -> Self {
        let body = format!(
            "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01//EN\"\"http://www.w3.org/TR/html4/strict.dtd\">\r\n\
             <HTML><HEAD><TITLE>Bad Request</TITLE>\r\n\
             <META HTTP-EQUIV=\"Content-Type\" Content=\"text/html; charset=us-ascii\"></HEAD>\r\n\
             <BODY><h2>{title}</h2>\r\n<hr><p>HTTP Error {status}. {detail}</p>\r\n</BODY></HTML>\r\n"
        );
        Self {
            status,
            headers: vec![
                ("content-type", "text/html; charset=us-ascii".to_owned()),
                ("server", "Microsoft-HTTPAPI/2.0".to_owned()),
            ],
            body: body.into_bytes(),
            location: None,
        }
    }
}

/// A failed request, in Dataverse's terms. `code` is the hex code the service puts in the envelope; it
/// is often empty or `0x0` on the real service too, which is why clients must branch on the status.
#[derive(Debug, Clone)]
pub struct Fail {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub headers: Vec<(&'static str, String)>,
}

impl Fail {
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn into_reply(self) -> Reply {
        let mut reply = Reply::json(
            self.status,
            &json!({"error": {"code": self.code, "message": self.message}}),
        );
        reply.headers.extend(self.headers);
        reply
    }

    /// `0x8006088a`: an unknown entity set, function or path segment.
    pub fn segment_not_found(segment: &str) -> Self {
        Self::new(
            404,
            "0x8006088a",
            format!("Resource not found for the segment '{segment}'."),
        )
    }

    /// `0x80060888`: the generic `OData` URI error, used for query options the service refuses.
    pub fn bad_query(message: impl Into<String>) -> Self {
        Self::new(400, "0x80060888", message)
    }

    pub fn unsupported_option(option: &str) -> Self {
        Self::bad_query(format!("The query parameter {option} is not supported"))
    }

    pub fn no_such_property(property: &str, type_name: &str) -> Self {
        Self::new(
            400,
            "0x0",
            format!("Could not find a property named '{property}' on type '{type_name}'."),
        )
    }

    /// `0x80040217` `ObjectDoesNotExist`, in the wording of current environments.
    pub fn row_not_found(logical_name: &str, id: &uuid::Uuid) -> Self {
        Self::new(
            404,
            "0x80040217",
            format!("Entity '{logical_name}' With Id = {id} Does Not Exist"),
        )
    }

    /// `0x80048d19` `ODataClientPayloadError`: the body cannot be read as the entity.
    pub fn payload(entity_set: &str, inner: impl std::fmt::Display) -> Self {
        Self::new(
            400,
            "0x80048d19",
            format!(
                "Error identified in Payload provided by the user for Entity :'{entity_set}' ----> InnerException : Microsoft.OData.ODataException: {inner}"
            ),
        )
    }

    /// Something real Dataverse does that this emulator deliberately does not. 501 is what the service
    /// itself answers for an operation it does not implement, so a client treats both alike.
    pub fn not_implemented(what: impl std::fmt::Display) -> Self {
        Self::new(
            501,
            "0x80040216",
            format!("The Dataverse emulator does not implement {what}."),
        )
    }

    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "0x80060888",
            format!("The requested resource does not support http method '{method}'."),
        )
    }
}
