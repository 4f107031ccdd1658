//! The simulator's inventory: which bare metal servers exist in which project.
//!
//! The catalog is fixed for the life of a simulator (tests that need another world start
//! another simulator). It answers two questions for the `remote_console` route: does this
//! server exist in this project, and is it Linux (console allowed) or Windows (`BMS.0395`).
//!
//! File format (JSON), so a user can point `simulate` at their own world:
//! ```json
//! {"projects": {"<project id>": [{"id": "<server id>", "name": "web-01", "os": "linux"}]}}
//! ```
//! `os` is `"linux"` or `"windows"`. Unknown fields are refused so a typo is an error rather
//! than a silently missing server.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The demo project: owns two Linux servers and one Windows server.
pub const DEMO_PROJECT_ID: &str = "bbf1946d374b44a0a2a95533562ba954";
/// `demo-linux-01`: a console URL is issued for it.
pub const DEMO_LINUX_SERVER_ID: &str = "cf2a8b97-b5c6-47ef-9714-eb27adf26e5b";
/// `demo-linux-02`: a second Linux server, so caches keyed by server can be told apart.
pub const DEMO_LINUX_SERVER_2_ID: &str = "7d0c3e1a-4b2f-4e8d-a6c5-9f1b2e3d4c5a";
/// `demo-windows-01`: refused with `BMS.0395`.
pub const DEMO_WINDOWS_SERVER_ID: &str = "5f3c8a2e-1d4b-4c6e-9f7a-2b8d0e4c6a13";

/// Operating system family; the only server property the console API cares about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerOs {
    Linux,
    Windows,
}

/// One bare metal server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimServer {
    pub id: String,
    pub name: String,
    pub os: ServerOs,
}

/// Project id → servers. Server ids are unique within a project.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    projects: BTreeMap<String, Vec<SimServer>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    projects: BTreeMap<String, Vec<SimServer>>,
}

impl Catalog {
    /// An empty catalog: every server is unknown (`BMS.0040`).
    pub fn new() -> Catalog {
        Catalog::default()
    }

    /// The demo world used by the demo config, the `simulate` subcommand and tests.
    pub fn demo() -> Catalog {
        let server = |id: &str, name: &str, os| SimServer {
            id: id.to_string(),
            name: name.to_string(),
            os,
        };
        let mut projects = BTreeMap::new();
        projects.insert(
            DEMO_PROJECT_ID.to_string(),
            vec![
                server(DEMO_LINUX_SERVER_ID, "demo-linux-01", ServerOs::Linux),
                server(DEMO_LINUX_SERVER_2_ID, "demo-linux-02", ServerOs::Linux),
                server(DEMO_WINDOWS_SERVER_ID, "demo-windows-01", ServerOs::Windows),
            ],
        );
        Catalog { projects }
    }

    /// Reads a catalog file (format in the module docs). The error names the file.
    pub fn from_json_file(path: &Path) -> Result<Catalog, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read catalog {}: {e}", path.display()))?;
        Catalog::from_json_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses and validates a catalog document.
    pub fn from_json_str(s: &str) -> Result<Catalog, String> {
        let file: CatalogFile =
            serde_json::from_str(s).map_err(|e| format!("invalid catalog JSON: {e}"))?;
        let mut catalog = Catalog::new();
        for (project, servers) in file.projects {
            catalog.add_project(&project)?;
            for server in servers {
                catalog.add_server(&project, server)?;
            }
        }
        Ok(catalog)
    }

    /// Adds a project without servers (every server id in it is unknown).
    pub fn add_project(&mut self, project_id: &str) -> Result<(), String> {
        check_id("project id", project_id)?;
        if project_id.contains('/') {
            return Err(format!("project id {project_id:?} contains '/'"));
        }
        self.projects.entry(project_id.to_string()).or_default();
        Ok(())
    }

    /// Adds a server to a project (creating the project). A server id may contain `/`: the
    /// SDK escapes it as `%2F` in the path, and the simulator decodes path segments.
    pub fn add_server(&mut self, project_id: &str, server: SimServer) -> Result<(), String> {
        self.add_project(project_id)?;
        check_id("server id", &server.id)?;
        let servers = self.projects.entry(project_id.to_string()).or_default();
        if servers.iter().any(|s| s.id == server.id) {
            return Err(format!(
                "server id {:?} appears twice in project {project_id:?}",
                server.id
            ));
        }
        servers.push(server);
        Ok(())
    }

    /// The server with this id in this project, if any.
    pub fn server(&self, project_id: &str, server_id: &str) -> Option<&SimServer> {
        self.projects
            .get(project_id)?
            .iter()
            .find(|s| s.id == server_id)
    }

    /// The servers of a project (empty for an unknown project).
    pub fn servers(&self, project_id: &str) -> &[SimServer] {
        self.projects.get(project_id).map_or(&[], Vec::as_slice)
    }

    /// Every project id, sorted.
    pub fn project_ids(&self) -> impl Iterator<Item = &str> {
        self.projects.keys().map(String::as_str)
    }
}

fn check_id(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if id.chars().any(char::is_control) {
        return Err(format!("{what} {id:?} contains a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_has_the_documented_servers() {
        let c = Catalog::demo();
        let linux = c.server(DEMO_PROJECT_ID, DEMO_LINUX_SERVER_ID).unwrap();
        assert_eq!(
            (linux.name.as_str(), linux.os),
            ("demo-linux-01", ServerOs::Linux)
        );
        let windows = c.server(DEMO_PROJECT_ID, DEMO_WINDOWS_SERVER_ID).unwrap();
        assert_eq!(
            (windows.name.as_str(), windows.os),
            ("demo-windows-01", ServerOs::Windows)
        );
        assert_eq!(
            c.server(DEMO_PROJECT_ID, DEMO_LINUX_SERVER_2_ID)
                .map(|s| s.os),
            Some(ServerOs::Linux)
        );
        assert_eq!(c.servers(DEMO_PROJECT_ID).len(), 3);
        assert!(c.server("other", DEMO_LINUX_SERVER_ID).is_none());
    }

    #[test]
    fn json_round_trips_and_errors_are_clear() {
        let c = Catalog::from_json_str(
            r#"{"projects":{"p1":[{"id":"s1","name":"a","os":"linux"},{"id":"s/2","name":"b","os":"windows"}],"p2":[]}}"#,
        )
        .unwrap();
        assert_eq!(c.server("p1", "s/2").map(|s| s.os), Some(ServerOs::Windows));
        assert_eq!(c.project_ids().collect::<Vec<_>>(), vec!["p1", "p2"]);

        for (bad, needle) in [
            ("not json", "invalid catalog JSON"),
            (
                r#"{"projects":{"p":[{"id":"s","name":"a","os":"bsd"}]}}"#,
                "bsd",
            ),
            (
                r#"{"projects":{"p":[{"id":"s","name":"a","os":"linux","x":1}]}}"#,
                "x",
            ),
            (r#"{"projects":{"":[]}}"#, "project id is empty"),
            (r#"{"projects":{"a/b":[]}}"#, "contains '/'"),
            (
                r#"{"projects":{"p":[{"id":"","name":"a","os":"linux"}]}}"#,
                "server id is empty",
            ),
            (
                r#"{"projects":{"p":[{"id":"s","name":"a","os":"linux"},{"id":"s","name":"b","os":"linux"}]}}"#,
                "appears twice",
            ),
        ] {
            let err = Catalog::from_json_str(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn files_are_read_and_missing_files_named() {
        let path = std::env::temp_dir().join(format!("bmsgw-catalog-{}.json", std::process::id()));
        std::fs::write(
            &path,
            r#"{"projects":{"p":[{"id":"s","name":"n","os":"linux"}]}}"#,
        )
        .unwrap();
        assert!(Catalog::from_json_file(&path)
            .unwrap()
            .server("p", "s")
            .is_some());
        std::fs::remove_file(&path).unwrap();
        let err = Catalog::from_json_file(&path).unwrap_err();
        assert!(err.contains(&path.display().to_string()));
    }
}
