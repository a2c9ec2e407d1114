//! The drill's private directory ([`Scratch`], removed when dropped unless `--keep`) and
//! the unprivileged owner PostgreSQL runs as when the drill runs as root.

use std::fs::{self};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::{Gid, Uid, User};
use pitrkit::error::{Error, Result};
use pitrkit::runner::note;

/// `sizeof(sun_path)` on Linux: PostgreSQL refuses a socket path that does not fit.
const SOCKET_PATH_MAX: usize = 107;

/// Trust for connections on the private socket: safe because the socket lives in a
/// directory nobody else can enter. The server listens on no TCP address at all
/// (`listen_addresses = ''`): trust on 127.0.0.1 would let any local user run
/// `COPY … TO PROGRAM` as the drill's OS user.
const HBA: &str = "local all all trust\n";

/// The unprivileged OS user PostgreSQL runs as when pitr-check runs as root (PostgreSQL
/// refuses to run as root).
#[derive(Debug, Clone)]
pub struct Owner {
    uid: Uid,
    gid: Gid,
}

impl Owner {
    /// `None` when not running as root: then everything runs as the current user.
    pub fn for_server(name: &str) -> Result<Option<Owner>> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        let user = User::from_name(name)
            .map_err(|e| Error::Usage(format!("cannot look up --run-as user '{name}': {e}")))?
            .ok_or_else(|| {
                Error::Usage(format!(
                    "--run-as user '{name}' does not exist: give the OS user PostgreSQL runs as"
                ))
            })?;
        if user.uid.is_root() {
            return Err(Error::Usage(format!(
                "--run-as {name} is root, and PostgreSQL refuses to run as root"
            )));
        }
        Ok(Some(Owner {
            uid: user.uid,
            gid: user.gid,
        }))
    }
}

/// The drill's private directory: `data/` (the restored cluster), `postgres.log`, the
/// server's socket and our pg_hba.conf. Mode 0700, owned by the server's user.
pub struct Scratch {
    pub(super) dir: PathBuf,
    owner: Option<Owner>,
    keep: bool,
}

impl Scratch {
    /// Makes the directory under `base` with an empty `data/` ready for bb-restore, which
    /// gives the restored files to the owner of `data/`'s parent, that is to `owner`.
    pub fn create(base: &Path, owner: Option<Owner>, keep: bool) -> Result<Scratch> {
        let dir = tempfile::Builder::new()
            .prefix("pitrkit-drill-")
            .tempdir_in(base)
            .map_err(|e| Error::local_io(base, e))?
            .keep();
        // From here on, dropping `scratch` cleans up.
        let scratch = Scratch { dir, owner, keep };
        let socket = scratch.dir.join(".s.PGSQL.65535");
        if socket.as_os_str().len() > SOCKET_PATH_MAX {
            return Err(Error::Usage(format!(
                "{} is too long a path for the server's Unix socket: give a shorter --workdir",
                scratch.dir.display()
            )));
        }
        scratch.make_private(&scratch.dir, true)?;
        scratch.write_private("pg_hba.conf", HBA)?;
        scratch.write_private("pg_ident.conf", "")?;
        scratch.make_private(&scratch.data(), false)?;
        Ok(scratch)
    }

    /// Where the backup is restored.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Where the drill restores every tablespace (`<oid>` below it).
    pub fn tablespaces(&self) -> PathBuf {
        self.dir.join("tablespaces")
    }

    fn make_private(&self, dir: &Path, exists: bool) -> Result<()> {
        if !exists {
            fs::create_dir(dir).map_err(|e| Error::local_io(dir, e))?;
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::local_io(dir, e))?;
        self.give(dir)
    }

    fn write_private(&self, name: &str, text: &str) -> Result<()> {
        let path = self.dir.join(name);
        fs::write(&path, text).map_err(|e| Error::local_io(&path, e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::local_io(&path, e))?;
        self.give(&path)
    }

    /// Hands a path to the server's user (when running as root).
    pub(super) fn give(&self, path: &Path) -> Result<()> {
        match &self.owner {
            Some(o) => std::os::unix::fs::lchown(path, Some(o.uid.as_raw()), Some(o.gid.as_raw()))
                .map_err(|e| Error::local_io(path, e)),
            None => Ok(()),
        }
    }

    /// A command run as the server's user, in this directory (the caller's working
    /// directory may be one that user can't enter).
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.current_dir(&self.dir);
        if let Some(o) = &self.owner {
            c.uid(o.uid.as_raw()).gid(o.gid.as_raw());
        }
        c
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            note(format!(
                "kept {} for inspection: data/ holds the stopped cluster (data/postmaster.opts \
                 the command line it ran with), postgres.log its log; remove it when done",
                self.dir.display()
            ));
        } else if let Err(e) = fs::remove_dir_all(&self.dir) {
            note(format!("could not remove {}: {e}", self.dir.display()));
        }
    }
}
