//! File tracking of dumping threads through BPF trampolines (fexit) on two kernel functions:
//! only calls of those functions pay (a trampoline and one map lookup), unlike syscall
//! tracepoints, which send every system call of every task through the slow path.
use core::ptr::addr_of_mut;

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_probe_read_kernel, generated::bpf_probe_read_kernel_str},
    macros::fexit,
    programs::FExitContext,
};
use covobs_common::{Config, FileIdentity, FileOpenRecord, FileWriteRecord, PATH_LEN, kind};

use crate::{
    dumps::in_dump,
    maps::{config, current, header, kernel_current, reserve},
};

/// The inode behind a `struct file *`, and a position.
#[inline(always)]
fn identify_file(cfg: &Config, file: u64, pos: i64) -> FileIdentity {
    let k = &cfg.kernel;
    if k.valid == 0 || file == 0 {
        return FileIdentity::default();
    }
    // SAFETY: reads through bpf_probe_read_kernel, which fails cleanly on a bad address; the
    // offsets come from this kernel's BTF.
    let read = |addr: u64| unsafe { bpf_probe_read_kernel(addr as *const u64) }.ok();
    let id = (|| {
        let inode = read(file + u64::from(k.file_f_inode))?;
        let ino = read(inode + u64::from(k.inode_i_ino))?;
        let sb = read(inode + u64::from(k.inode_i_sb))?;
        let dev = read(sb + u64::from(k.sb_s_dev))? as u32;
        Some(FileIdentity {
            ino,
            dev,
            known: 1,
            pos,
        })
    })();
    id.unwrap_or_default()
}

/// `vfs_write(struct file *, const char __user *, size_t, loff_t *pos)` returned: `*pos` is the
/// offset after the bytes written (write(2) and pwrite64(2) both come through here).
#[fexit(function = "vfs_write")]
pub fn covobs_vfs_write(ctx: FExitContext) -> u32 {
    let Some(dump) = in_dump(kernel_current().tid) else {
        return 0;
    };
    let Some(cfg) = config() else { return 0 };
    let Some(cur) = current(cfg) else { return 0 };
    let file: u64 = ctx.arg(0);
    let pos_ptr: u64 = ctx.arg(3);
    let ret: i64 = ctx.arg(4);
    // SAFETY: `pos` points to a kernel loff_t of the caller; read through the helper.
    let pos_after = unsafe { bpf_probe_read_kernel(pos_ptr as *const i64) }.unwrap_or(-1);
    let identity = identify_file(cfg, file, pos_after);
    if let Some(mut entry) = reserve::<FileWriteRecord>(kind::FILE_WRITE) {
        entry.write(FileWriteRecord {
            hdr: header(kind::FILE_WRITE, cur.tgid, cur.tid),
            dump_cookie: dump.cookie,
            fd: -1,
            call: 0,
            ret,
            offset: -1,
            file: identity,
        });
        entry.submit(0);
    }
    0
}

/// `do_filp_open(int dfd, struct filename *, const struct open_flags *)` returned the opened
/// `struct file *` (or an error pointer): the path as the program gave it, and the inode.
#[fexit(function = "do_filp_open")]
pub fn covobs_filp_open(ctx: FExitContext) -> u32 {
    let Some(dump) = in_dump(kernel_current().tid) else {
        return 0;
    };
    let Some(cfg) = config() else { return 0 };
    let Some(cur) = current(cfg) else { return 0 };
    let dfd: i32 = ctx.arg(0);
    let filename: u64 = ctx.arg(1);
    let file: u64 = ctx.arg(3);
    // Error pointers are the last 4095 addresses.
    let failed = file == 0 || file >= u64::MAX - 4095;
    let Some(mut entry) = reserve::<FileOpenRecord>(kind::FILE_OPEN) else {
        return 0;
    };
    let identity = if failed {
        FileIdentity::default()
    } else {
        identify_file(cfg, file, 0)
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` points to a reserved ring-buffer slot of the record's size; fields are written
    // through raw pointers, the path by the helper (bounded by PATH_LEN). `struct filename`'s
    // first member is the kernel copy of the path (`const char *name`).
    unsafe {
        addr_of_mut!((*rec).hdr).write(header(kind::FILE_OPEN, cur.tgid, cur.tid));
        addr_of_mut!((*rec).dump_cookie).write(dump.cookie);
        addr_of_mut!((*rec).ret).write(if failed { -1 } else { 0 });
        addr_of_mut!((*rec).flags).write(0);
        addr_of_mut!((*rec).dfd).write(dfd);
        addr_of_mut!((*rec).file).write(identity);
        let name = bpf_probe_read_kernel(filename as *const u64).unwrap_or(0);
        let dst = addr_of_mut!((*rec).path).cast::<c_void>();
        if name == 0 || bpf_probe_read_kernel_str(dst, PATH_LEN as u32, name as *const c_void) < 0 {
            addr_of_mut!((*rec).path).cast::<u8>().write(0);
        }
    }
    entry.submit(0);
    0
}
