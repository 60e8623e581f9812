use std::fmt;

/// How far a publish travels.
///
/// The scope is part of the API, not an optimisation hint: a `worker` publish reaches only the
/// members served by the publisher's own worker thread, whatever else is subscribed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scope {
    /// Only sessions served by the same worker thread as the publisher.
    Worker,
    /// Every session on this node, on every worker.
    Node,
    /// Every session on every node of the cluster. Until a cluster broker is configured this is
    /// the same as [`Scope::Node`].
    #[default]
    Cluster,
}

impl Scope {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Worker => "worker",
            Scope::Node => "node",
            Scope::Cluster => "cluster",
        }
    }

    /// Parses a wire name; `None` for anything else.
    pub fn from_name(name: &str) -> Option<Scope> {
        match name {
            "worker" => Some(Scope::Worker),
            "node" => Some(Scope::Node),
            "cluster" => Some(Scope::Cluster),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
