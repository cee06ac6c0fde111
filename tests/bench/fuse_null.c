/*
 * fuse-null: a FUSE filesystem that keeps names and sizes in memory and
 * nothing else. Writes are discarded, reads return zeros. The benchmarks
 * mount it beside kaiofs to measure what the FUSE round trip alone costs on
 * this machine: the same fio jobs and metadata phases, with no device I/O
 * and no filesystem work behind them.
 *
 *   fuse-null [-f] [-o OPT,...] MOUNTPOINT
 *
 * It is tuned as kaiofs tunes its mount (max_write 1 MiB, max_background
 * 1024, ASYNC_DIO, PARALLEL_DIROPS, long entry and attribute timeouts,
 * FOPEN_DIRECT_IO and FOPEN_NOFLUSH, default_permissions) and serves its
 * requests with kaiofs's own receive loop (src/fuse/rx.c: one thread per CPU,
 * buffers in a locked arena, 50 us of polling before a thread sleeps), or
 * with -o loop=libfuse with libfuse's multi-threaded loop, as libfuse's
 * examples do.
 */
#include <errno.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "arena.h"
#include "rx.h"

#define TIMEOUT 86400.0
#define MAX_WRITE (1u << 20)
#define NBUCKETS 65536u

struct node {
	fuse_ino_t ino;
	mode_t mode;
	nlink_t nlink;
	uint64_t size;
	struct timespec mtime;
	struct dentry *children;    /* a directory's names */
};

/* A name in a directory. */
struct dentry {
	struct dentry *next;        /* hash chain */
	struct dentry *sib_next;    /* the directory's list of names */
	struct dentry **sib_prev;
	fuse_ino_t parent, ino;
	char name[];
};

static struct {
	pthread_mutex_t mu;
	struct node **nodes;        /* by inode number; [1] is the root */
	size_t nnodes, cap;
	struct dentry *bucket[NBUCKETS];
} nfs = { .mu = PTHREAD_MUTEX_INITIALIZER };

static unsigned hash_of(fuse_ino_t parent, const char *name)
{
	uint64_t h = 1469598103934665603ull ^ parent;

	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 1099511628211ull;
	return (unsigned)(h % NBUCKETS);
}

static struct node *node_of(fuse_ino_t ino)
{
	return ino < nfs.nnodes ? nfs.nodes[ino] : NULL;
}

static struct dentry *dentry_find(fuse_ino_t parent, const char *name)
{
	for (struct dentry *d = nfs.bucket[hash_of(parent, name)]; d; d = d->next)
		if (d->parent == parent && strcmp(d->name, name) == 0)
			return d;
	return NULL;
}

static int grow_tables(void)
{
	size_t cap = nfs.cap ? nfs.cap * 2 : 1024;
	struct node **n = realloc(nfs.nodes, cap * sizeof(*n));

	if (!n)
		return -ENOMEM;
	nfs.nodes = n;
	memset(nfs.nodes + nfs.cap, 0, (cap - nfs.cap) * sizeof(*n));
	nfs.cap = cap;
	return 0;
}

static struct node *node_new(mode_t mode)
{
	struct node *n;

	if (nfs.nnodes == nfs.cap && grow_tables())
		return NULL;
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->ino = nfs.nnodes++;
	n->mode = mode;
	n->nlink = S_ISDIR(mode) ? 2 : 1;
	clock_gettime(CLOCK_REALTIME, &n->mtime);
	nfs.nodes[n->ino] = n;
	return n;
}

static int dentry_add(struct node *dir, fuse_ino_t parent, const char *name, fuse_ino_t ino)
{
	size_t len = strlen(name);
	struct dentry *d = malloc(sizeof(*d) + len + 1);
	unsigned h = hash_of(parent, name);

	if (!d)
		return -ENOMEM;
	d->parent = parent;
	d->ino = ino;
	memcpy(d->name, name, len + 1);
	d->next = nfs.bucket[h];
	nfs.bucket[h] = d;
	d->sib_next = dir->children;
	d->sib_prev = &dir->children;
	if (d->sib_next)
		d->sib_next->sib_prev = &d->sib_next;
	dir->children = d;
	return 0;
}

static void dentry_remove(struct dentry *d)
{
	struct dentry **p = &nfs.bucket[hash_of(d->parent, d->name)];

	while (*p != d)
		p = &(*p)->next;
	*p = d->next;
	*d->sib_prev = d->sib_next;
	if (d->sib_next)
		d->sib_next->sib_prev = d->sib_prev;
	free(d);
}

static void fill_stat(const struct node *n, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_mode = n->mode;
	st->st_nlink = n->nlink;
	st->st_size = (off_t)n->size;
	st->st_blksize = 4096;
	st->st_blocks = (blkcnt_t)((n->size + 511) / 512);
	st->st_atim = st->st_mtim = st->st_ctim = n->mtime;
}

static void reply_node(fuse_req_t req, const struct node *n)
{
	struct fuse_entry_param e = { .attr_timeout = TIMEOUT, .entry_timeout = TIMEOUT };

	e.ino = n->ino;
	fill_stat(n, &e.attr);
	fuse_reply_entry(req, &e);
}

static void null_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	conn->max_write = MAX_WRITE;
	conn->max_background = 1024;
	conn->congestion_threshold = 768;
	if (conn->capable & FUSE_CAP_ASYNC_DIO)
		conn->want |= FUSE_CAP_ASYNC_DIO;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	conn->want &= ~(unsigned)(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
}

static void null_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param negative = { .entry_timeout = TIMEOUT };
	struct dentry *d;

	pthread_mutex_lock(&nfs.mu);
	d = dentry_find(parent, name);
	if (d)
		reply_node(req, node_of(d->ino));
	else
		fuse_reply_entry(req, &negative);
	pthread_mutex_unlock(&nfs.mu);
}

static void null_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
			 struct fuse_file_info *fi)
{
	struct node *n;
	struct stat st;

	(void)fi;
	pthread_mutex_lock(&nfs.mu);
	n = node_of(ino);
	if (n) {
		if (to_set & FUSE_SET_ATTR_SIZE)
			n->size = (uint64_t)attr->st_size;
		if (to_set & FUSE_SET_ATTR_MODE)
			n->mode = (n->mode & S_IFMT) | (attr->st_mode & 07777);
		fill_stat(n, &st);
	}
	pthread_mutex_unlock(&nfs.mu);
	if (n)
		fuse_reply_attr(req, &st, TIMEOUT);
	else
		fuse_reply_err(req, ENOENT);
}

static void null_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	null_setattr(req, ino, NULL, 0, fi);
}

/* A new name for a new node; the reply is the caller's. */
static int make_node(fuse_ino_t parent, const char *name, mode_t mode, struct node **out)
{
	struct node *dir = node_of(parent), *n;

	if (!dir || !S_ISDIR(dir->mode))
		return -ENOENT;
	if (dentry_find(parent, name))
		return -EEXIST;
	n = node_new(mode);
	if (!n)
		return -ENOMEM;
	if (dentry_add(dir, parent, name, n->ino)) {
		nfs.nodes[n->ino] = NULL;
		free(n);
		return -ENOMEM;
	}
	if (S_ISDIR(mode))
		dir->nlink++;
	*out = n;
	return 0;
}

static void null_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct node *n;
	int r;

	pthread_mutex_lock(&nfs.mu);
	r = make_node(parent, name, S_IFDIR | (mode & 07777), &n);
	if (!r)
		reply_node(req, n);
	pthread_mutex_unlock(&nfs.mu);
	if (r)
		fuse_reply_err(req, -r);
}

static void open_flags(struct fuse_file_info *fi)
{
	fi->direct_io = 1;
	fi->noflush = 1;
}

static void null_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			struct fuse_file_info *fi)
{
	struct fuse_entry_param e = { .attr_timeout = TIMEOUT, .entry_timeout = TIMEOUT };
	struct node *n;
	int r;

	pthread_mutex_lock(&nfs.mu);
	r = make_node(parent, name, S_IFREG | (mode & 07777), &n);
	if (!r) {
		e.ino = n->ino;
		fill_stat(n, &e.attr);
	}
	pthread_mutex_unlock(&nfs.mu);
	if (r) {
		fuse_reply_err(req, -r);
		return;
	}
	open_flags(fi);
	fuse_reply_create(req, &e, fi);
}

static void remove_name(fuse_req_t req, fuse_ino_t parent, const char *name, bool dir)
{
	struct dentry *d;
	struct node *n = NULL;
	int r = 0;

	pthread_mutex_lock(&nfs.mu);
	d = dentry_find(parent, name);
	if (d)
		n = node_of(d->ino);
	if (!n)
		r = ENOENT;
	else if (dir && !S_ISDIR(n->mode))
		r = ENOTDIR;
	else if (!dir && S_ISDIR(n->mode))
		r = EISDIR;
	else if (dir && n->children)
		r = ENOTEMPTY;
	if (!r) {
		dentry_remove(d);
		if (dir)
			node_of(parent)->nlink--;
		/* the node stays until unmount: the kernel may still forget it */
		n->nlink = 0;
	}
	pthread_mutex_unlock(&nfs.mu);
	fuse_reply_err(req, r);
}

static void null_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_name(req, parent, name, false);
}

static void null_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_name(req, parent, name, true);
}

static void null_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n;

	pthread_mutex_lock(&nfs.mu);
	n = node_of(ino);
	if (n && (fi->flags & O_TRUNC))
		n->size = 0;
	pthread_mutex_unlock(&nfs.mu);
	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	open_flags(fi);
	fuse_reply_open(req, fi);
}

static const char zeros[MAX_WRITE];

static void null_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	struct node *n;
	uint64_t fsize = 0;

	(void)fi;
	pthread_mutex_lock(&nfs.mu);
	n = node_of(ino);
	if (n)
		fsize = n->size;
	pthread_mutex_unlock(&nfs.mu);
	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if ((uint64_t)off >= fsize)
		size = 0;
	else if (size > fsize - (uint64_t)off)
		size = (size_t)(fsize - (uint64_t)off);
	fuse_reply_buf(req, zeros, size < sizeof(zeros) ? size : sizeof(zeros));
}

static void null_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct node *n;

	(void)buf;
	(void)fi;
	pthread_mutex_lock(&nfs.mu);
	n = node_of(ino);
	if (n && (uint64_t)off + size > n->size)
		n->size = (uint64_t)off + size;
	pthread_mutex_unlock(&nfs.mu);
	if (n)
		fuse_reply_write(req, size);
	else
		fuse_reply_err(req, ENOENT);
}

static void null_ok(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void null_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)datasync;
	null_ok(req, ino, fi);
}

static void null_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	(void)ino;
	(void)nlookup;
	fuse_reply_none(req);
}

static void null_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	(void)count;
	(void)forgets;
	fuse_reply_none(req);
}

static void null_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct node *n;

	pthread_mutex_lock(&nfs.mu);
	n = node_of(ino);
	pthread_mutex_unlock(&nfs.mu);
	if (!n || !S_ISDIR(n->mode)) {
		fuse_reply_err(req, n ? ENOTDIR : ENOENT);
		return;
	}
	fuse_reply_open(req, fi);
}

/* Directory offsets are positions in the directory's list of names: a
 * listing is only consistent while nothing else changes the directory,
 * which is all the benchmarks need. */
static void null_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			 struct fuse_file_info *fi)
{
	char *buf = malloc(size);
	size_t used = 0;
	off_t pos = 0;

	(void)fi;
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_lock(&nfs.mu);
	for (struct dentry *d = node_of(ino) ? node_of(ino)->children : NULL; d;
	     d = d->sib_next, pos++) {
		struct stat st = { .st_ino = d->ino, .st_mode = node_of(d->ino)->mode };
		size_t len;

		if (pos < off)
			continue;
		len = fuse_add_direntry(req, buf + used, size - used, d->name, &st, pos + 1);
		if (len > size - used)
			break;
		used += len;
	}
	pthread_mutex_unlock(&nfs.mu);
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void null_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv = { .f_bsize = 4096, .f_frsize = 4096, .f_blocks = 1u << 30,
			      .f_bfree = 1u << 30, .f_bavail = 1u << 30, .f_files = 1u << 30,
			      .f_ffree = 1u << 30, .f_namemax = 255 };

	(void)ino;
	fuse_reply_statfs(req, &sv);
}

static const struct fuse_lowlevel_ops null_ops = {
	.init = null_init,
	.lookup = null_lookup,
	.forget = null_forget,
	.forget_multi = null_forget_multi,
	.getattr = null_getattr,
	.setattr = null_setattr,
	.mkdir = null_mkdir,
	.create = null_create,
	.unlink = null_unlink,
	.rmdir = null_rmdir,
	.open = null_open,
	.read = null_read,
	.write = null_write,
	.flush = null_ok,
	.release = null_ok,
	.fsync = null_fsync,
	.opendir = null_opendir,
	.readdir = null_readdir,
	.releasedir = null_ok,
	.statfs = null_statfs,
};

#define ARENA_SIZE (16u << 20)
#define POLL_US 50

/* kaiofs's receive loop, with kaiofs's defaults and nothing to wait for. */
static int kaiofs_loop(struct fuse_session *se)
{
	struct rx_config cfg = { .nthreads = rx_default_threads(), .poll_us = POLL_US };
	char err[256];
	struct arena *a = arena_create(ARENA_SIZE, 4096, err, sizeof(err));
	int r;

	if (!a) {
		fprintf(stderr, "fuse-null: %s\n", err);
		return 1;
	}
	r = rx_loop(se, a, &cfg) ? 1 : 0;
	arena_destroy(a);
	return r;
}

static int libfuse_loop(struct fuse_session *se, const struct fuse_cmdline_opts *o)
{
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	int r = 1;

	if (cfg) {
		fuse_loop_cfg_set_max_threads(cfg, o->max_threads);
		fuse_loop_cfg_set_idle_threads(cfg, o->max_idle_threads);
		r = fuse_session_loop_mt(se, cfg) ? 1 : 0;
		fuse_loop_cfg_destroy(cfg);
	}
	return r;
}

static void free_all(void)
{
	for (unsigned i = 0; i < NBUCKETS; i++)
		while (nfs.bucket[i]) {
			struct dentry *d = nfs.bucket[i];

			nfs.bucket[i] = d->next;
			free(d);
		}
	for (size_t i = 0; i < nfs.nnodes; i++)
		free(nfs.nodes[i]);
	free(nfs.nodes);
}

static int run(struct fuse_args *args, const struct fuse_cmdline_opts *o, bool libfuse)
{
	struct fuse_session *se;
	int r = 1;

	if (fuse_opt_add_arg(args, "-odefault_permissions") != 0 ||
	    fuse_opt_add_arg(args, "-ofsname=fuse-null") != 0)
		return 1;
	se = fuse_session_new(args, &null_ops, sizeof(null_ops), NULL);
	if (!se)
		return 1;
	if (fuse_set_signal_handlers(se) != 0)
		goto destroy;
	if (fuse_session_mount(se, o->mountpoint) != 0)
		goto signals;
	fuse_daemonize(o->foreground);
	r = libfuse ? libfuse_loop(se, o) : kaiofs_loop(se);
	fuse_session_unmount(se);
signals:
	fuse_remove_signal_handlers(se);
destroy:
	fuse_session_destroy(se);
	return r;
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_opt opts[] = { { "loop=%s", 0, 0 }, FUSE_OPT_END };
	struct fuse_cmdline_opts o = { 0 };
	char *loop = NULL;
	bool libfuse = false;
	int r = 1;

	if (fuse_opt_parse(&args, &loop, opts, NULL) != 0 || fuse_parse_cmdline(&args, &o) != 0)
		goto out;
	if (loop && strcmp(loop, "libfuse") == 0) {
		libfuse = true;
	} else if (loop && strcmp(loop, "kaiofs") != 0) {
		fprintf(stderr, "fuse-null: -o loop=%s: use loop=kaiofs or loop=libfuse\n", loop);
		goto out;
	}
	if (o.show_help || !o.mountpoint) {
		printf("usage: %s [-f] [-o loop=kaiofs|libfuse] [-o OPT,...] MOUNTPOINT\n", argv[0]);
		fuse_cmdline_help();
		fuse_lowlevel_help();
		r = o.show_help ? 0 : 1;
		goto out;
	}
	/* inode 0 is no inode; the root is 1 */
	if (!node_new(S_IFDIR | 0755) || !node_new(S_IFDIR | 0755)) {
		fprintf(stderr, "fuse-null: out of memory\n");
		goto out;
	}
	r = run(&args, &o, libfuse);
out:
	free_all();
	free(loop);
	free(o.mountpoint);
	fuse_opt_free_args(&args);
	return r;
}
