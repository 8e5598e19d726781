//! What the kernel knows about our file descriptors that the standard library
//! hides: how much a pipe still holds unread, and whether a standard stream
//! was closed before we started.

use std::os::fd::{AsRawFd, RawFd};

/// Bytes written into the pipe behind `fd` that no one has read yet
/// (`FIONREAD`; Linux answers it on either end of a pipe).
pub fn unread(fd: &impl AsRawFd) -> std::io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid.
    match unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } {
        0 => Ok(n.max(0) as usize),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Was standard descriptor `fd` (0, 1 or 2) closed when the process started?
/// Rust's runtime opens a closed one as `/dev/null` for reading and writing
/// before `main`, so a closed stdout looks like a working one that swallows
/// everything. A shell's `>/dev/null` opens it write-only, `</dev/null`
/// read-only; only `1<>/dev/null` looks the same, and means the same.
pub fn closed_at_start(fd: RawFd) -> bool {
    // SAFETY: fstat and stat fill the zeroed structs; fcntl only reads flags.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        let mut null: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 || libc::stat(c"/dev/null".as_ptr(), &mut null) != 0 {
            return false;
        }
        let flags = libc::fcntl(fd, libc::F_GETFL);
        st.st_mode & libc::S_IFMT == libc::S_IFCHR
            && st.st_rdev == null.st_rdev
            && flags >= 0
            && flags & libc::O_ACCMODE == libc::O_RDWR
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    #[test]
    fn a_pipe_says_what_it_still_holds() {
        let (mut r, mut w) = std::io::pipe().unwrap();
        assert_eq!(super::unread(&w).unwrap(), 0);
        w.write_all(b"0123456789").unwrap();
        assert_eq!(super::unread(&r).unwrap(), 10);
        assert_eq!(super::unread(&w).unwrap(), 10);
        let mut buf = [0u8; 4];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(super::unread(&r).unwrap(), 6);
    }

    #[test]
    fn only_a_read_write_dev_null_counts_as_closed() {
        use std::os::fd::AsRawFd;
        let rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .unwrap();
        assert!(super::closed_at_start(rw.as_raw_fd()));
        let wo = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        assert!(!super::closed_at_start(wo.as_raw_fd()));
        let (r, _w) = std::io::pipe().unwrap();
        assert!(!super::closed_at_start(r.as_raw_fd()));
    }
}
