//! Where RabbitMQ is: the AMQP URLs of one broker or of the nodes of a
//! cluster, parsed once (feature `client`). A [`BrokerUrl`] keeps its text
//! for connecting and shows itself only as its node, `host:port`: its
//! password never reaches a log, a metric or an error.

use lapin::uri::AMQPUri;
use std::fmt;
use std::str::FromStr;

/// What replaces a password wherever a URL is shown.
const MASK: &str = "********";

/// Why a broker URL, or a list of them, is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerUrlError {
    /// The text is not an `amqp://` or `amqps://` URL; `url` is shown
    /// with its password masked.
    #[error("{url} is not an AMQP URL: {reason}")]
    Invalid {
        /// The URL, its password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An empty list.
    #[error("no broker URL given")]
    Empty,
}

/// One broker node's AMQP URL, e.g. `amqp://user:password@rabbit-1:5672/%2f`.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// The URL as given, credentials included: only for connecting.
    url: String,
    /// `host:port`, what the URL is shown as.
    node: String,
}

impl BrokerUrl {
    /// Parses `text` with lapin's own URL grammar, so a URL accepted here
    /// is one lapin connects with.
    pub fn parse(text: &str) -> Result<Self, BrokerUrlError> {
        if text.is_empty() {
            return Err(BrokerUrlError::Invalid {
                url: "\"\"".to_owned(),
                reason: "empty".to_owned(),
            });
        }
        let invalid = |reason: &str| BrokerUrlError::Invalid {
            url: masked(text),
            // lapin's message may quote the whole URL, password and all.
            reason: if reason.contains(text) {
                "not of the form amqp://user:password@host:port/vhost".to_owned()
            } else {
                reason.to_owned()
            },
        };
        if authority(text).is_some_and(|a| host_and_port(a).starts_with('[')) {
            // lapin's parser turns an IPv6 literal into `localhost`.
            return Err(invalid("IPv6 addresses are not supported: use a host name"));
        }
        let uri = AMQPUri::from_str(text).map_err(|reason| invalid(&reason))?;
        if uri.authority.host.is_empty() {
            return Err(invalid("it names no host"));
        }
        Ok(Self {
            url: text.to_owned(),
            node: format!("{}:{}", uri.authority.host, uri.authority.port),
        })
    }

    /// The URL with its credentials, to connect with. Never log it: show
    /// the `BrokerUrl` itself (its node) instead.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The node, `host:port`.
    pub fn node(&self) -> &str {
        &self.node
    }
}

impl FromStr for BrokerUrl {
    type Err = BrokerUrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// Shown as its node, `host:port`.
impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.node)
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrl({})", self.node)
    }
}

/// The nodes a connection may use, in the order they are tried: at least
/// one.
#[derive(Clone, PartialEq, Eq)]
pub struct Brokers {
    nodes: Vec<BrokerUrl>,
}

impl Brokers {
    /// The nodes `urls`, tried in this order; an error when it is empty.
    pub fn new(urls: Vec<BrokerUrl>) -> Result<Self, BrokerUrlError> {
        if urls.is_empty() {
            return Err(BrokerUrlError::Empty);
        }
        Ok(Self { nodes: urls })
    }

    /// Parses a comma-separated list of URLs (a comma inside a password is
    /// written `%2C`).
    pub fn parse_list(text: &str) -> Result<Self, BrokerUrlError> {
        let urls = text
            .split(',')
            .map(str::trim)
            .map(BrokerUrl::parse)
            .collect::<Result<_, _>>()?;
        Self::new(urls)
    }

    /// The nodes, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, BrokerUrl> {
        self.nodes.iter()
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never: a list has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node at `index`, counted round the list: `index` may grow
    /// forever.
    pub fn cycle(&self, index: usize) -> &BrokerUrl {
        &self.nodes[index % self.nodes.len()]
    }
}

impl From<BrokerUrl> for Brokers {
    fn from(url: BrokerUrl) -> Self {
        Self { nodes: vec![url] }
    }
}

/// Shown as its nodes, `host:port, host:port`.
impl fmt::Display for Brokers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, node) in self.nodes.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{node}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Brokers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Brokers({self})")
    }
}

/// The scheme and the authority (`user:password@host:port`) of `text`,
/// and what follows it, if it has an authority.
fn split(text: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = text.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    Some((scheme, authority, tail))
}

/// The authority of `text`, if it has one.
fn authority(text: &str) -> Option<&str> {
    split(text).map(|(_, authority, _)| authority)
}

/// The `host:port` part of an authority.
fn host_and_port(authority: &str) -> &str {
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// `text` with the password of its authority, if any, replaced by
/// [`MASK`]: how a URL that may not parse is shown.
pub fn masked(text: &str) -> String {
    let Some((scheme, authority, tail)) = split(text) else {
        // No authority to find a password in: show nothing of it.
        return format!("a URL of {} characters", text.chars().count());
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return text.to_owned();
    };
    let Some((user, _password)) = userinfo.split_once(':') else {
        return text.to_owned();
    };
    format!("{scheme}://{user}:{MASK}@{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_shows_only_its_node() {
        let url = BrokerUrl::parse("amqp://u:secret@rabbit-2:5673/%2f").expect("valid");
        assert_eq!(url.node(), "rabbit-2:5673");
        assert_eq!(url.to_string(), "rabbit-2:5673");
        assert_eq!(format!("{url:?}"), "BrokerUrl(rabbit-2:5673)");
        assert_eq!(url.url(), "amqp://u:secret@rabbit-2:5673/%2f");
        let default_port = BrokerUrl::parse("amqps://u:p@10.0.0.5/%2f").expect("valid");
        assert_eq!(default_port.node(), "10.0.0.5:5671");
    }

    #[test]
    fn a_list_is_split_at_commas_and_keeps_its_order() {
        let brokers = Brokers::parse_list(
            "amqp://u:p@a:5672/%2f, amqp://u:p@b:5673/%2f,amqp://u:p%2Cq@c:5674/%2f",
        )
        .expect("valid");
        assert_eq!(brokers.to_string(), "a:5672, b:5673, c:5674");
        assert_eq!(brokers.cycle(4).node(), "b:5673");
        assert_eq!(Brokers::new(Vec::new()), Err(BrokerUrlError::Empty));
    }

    #[test]
    fn errors_never_show_the_password() {
        for bad in [
            "http://u:secret@h:5672/",
            "amqp://u:secret@h:99999/",
            "amqp://u:secret@[::1]:5672/",
            "amqp://u:secret@h:5672/?heartbeat=x",
            "amqp:secret",
            "",
        ] {
            let error = BrokerUrl::parse(bad).expect_err(bad).to_string();
            assert!(!error.contains("secret"), "{bad}: {error}");
        }
        let error = Brokers::parse_list("amqp://u:p@a/%2f,,").expect_err("empty part");
        assert!(matches!(error, BrokerUrlError::Invalid { .. }), "{error}");
    }

    #[test]
    fn masking_keeps_everything_but_the_password() {
        assert_eq!(
            masked("amqp://u:secret@h:5672/%2f?heartbeat=5"),
            "amqp://u:********@h:5672/%2f?heartbeat=5"
        );
        assert_eq!(masked("amqp://h:5672/%2f"), "amqp://h:5672/%2f");
        assert_eq!(masked("amqp://u@h/"), "amqp://u@h/");
        assert_eq!(masked("amqp:secret"), "a URL of 11 characters");
    }
}
