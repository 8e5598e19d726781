//! What the kernel knows about our file descriptors that the standard library
//! hides: how much a pipe still holds unread, and whether a standard stream
//! was closed before we started.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Which of the standard descriptors 0, 1 and 2 were closed when the
/// process started, as [`probe`] found them.
static CLOSED: [AtomicBool; 3] = [const { AtomicBool::new(false) }; 3];

/// Runs before `main` and before Rust's runtime, which opens a closed
/// standard descriptor as `/dev/null` (so a closed stdout would look like a
/// working one that swallows everything): the dynamic loader calls the
/// functions in `.init_array` first.
#[used]
#[link_section = ".init_array"]
static PROBE: extern "C" fn() = probe;

extern "C" fn probe() {
    for (fd, closed) in CLOSED.iter().enumerate() {
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        if unsafe { libc::fcntl(fd as libc::c_int, libc::F_GETFD) } == -1 {
            closed.store(true, Ordering::Relaxed);
        }
    }
}

/// Was standard descriptor `fd` (0, 1 or 2) closed when the process started?
/// (`>&-`, `<&-`; a `/dev/null` given on purpose is open.)
pub fn closed_at_start(fd: usize) -> bool {
    // The probe's object must be linked in wherever this is called.
    std::hint::black_box(&PROBE);
    CLOSED.get(fd).is_some_and(|c| c.load(Ordering::Relaxed))
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
    fn the_test_process_started_with_its_standard_descriptors_open() {
        // The emulator tests start the binaries with them closed (`>&-`);
        // here stdout and stderr are the harness's pipes (stdin may be
        // closed under CI).
        assert!(!super::closed_at_start(1) && !super::closed_at_start(2));
        assert!(!super::closed_at_start(7));
    }
}
