/* Unit tests of the extended attribute layer (fs_xattr_codec.c) on a fresh ext4
 * image: every call and error case through libext2fs, then e2fsck, then the
 * kernel itself (a read-only loop mount) must read back the same attributes
 * and the same ACL bytes. Needs root for the mount. */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include <et/com_err.h>
#include <ext2fs/ext2fs.h>

#include "check.h"
#include "fs_xattr_codec.h"

#define MAX_ATTRS	128
#define ACL_A		"system.posix_acl_access"
#define ACL_D		"system.posix_acl_default"

static char tmpdir[] = "/tmp/test_fs_xattr_codec.XXXXXX";
static char img[256], img_ea[256], mnt[256], fsck_log[256], src[256];
static int mounted;
static ext2_filsys fs;
static ext2_ino_t ino_file, ino_dir, ino_link, ino_max, ino_many, ino_scratch;

/* ---- helpers ---- */

static void cleanup(void)
{
	char cmd[512];

	if (mounted) {
		snprintf(cmd, sizeof(cmd), "umount '%s'", mnt);
		if (system(cmd) != 0)
			fprintf(stderr, "cleanup: could not unmount %s\n", mnt);
		mounted = 0;
	}
	unlink(img);
	unlink(img_ea);
	unlink(fsck_log);
	rmdir(mnt);
	if (*src) {
		char small[300];

		snprintf(small, sizeof(small), "%s/small", src);
		unlink(small);
		rmdir(src);
	}
	rmdir(tmpdir);
}

static int run(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	if (st == -1 || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

static void check_err(errcode_t err, const char *what)
{
	if (err)
		fprintf(stderr, "%s: %s\n", what, error_message(err));
	CHECK_EQ(err, 0);
}

static void open_fs(const char *path)
{
	int flags = EXT2_FLAG_64BITS | EXT2_FLAG_RW;

	check_err(ext2fs_open2(path, "cache=off", flags, 0, 0, unix_io_manager,
			       &fs), "ext2fs_open2");
	check_err(ext2fs_read_bitmaps(fs), "ext2fs_read_bitmaps");
}

static void close_and_fsck(const char *path)
{
	check_err(ext2fs_close_free(&fs), "ext2fs_close_free");
	int rc = run("e2fsck -fn '%s' > '%s' 2>&1", path, fsck_log);

	if (rc != 0) {
		fprintf(stderr, "e2fsck -fn %s exited %d:\n", path, rc);
		run("cat '%s' >&2", fsck_log);
	}
	CHECK_EQ(rc, 0);
}

static ext2_ino_t make_file(const char *name)
{
	struct ext2_inode inode;
	ext2_ino_t ino;

	check_err(ext2fs_new_inode(fs, EXT2_ROOT_INO, LINUX_S_IFREG | 0644,
				   NULL, &ino), "ext2fs_new_inode");
	memset(&inode, 0, sizeof(inode));
	inode.i_mode = LINUX_S_IFREG | 0644;
	inode.i_links_count = 1;
	inode.i_atime = inode.i_ctime = inode.i_mtime = time(NULL);
	check_err(ext2fs_write_new_inode(fs, ino, &inode),
		  "ext2fs_write_new_inode");
	ext2fs_inode_alloc_stats2(fs, ino, +1, 0);
	check_err(ext2fs_link(fs, EXT2_ROOT_INO, name, ino, EXT2_FT_REG_FILE),
		  "ext2fs_link");
	return ino;
}

static ext2_ino_t lookup(const char *name)
{
	ext2_ino_t ino;

	check_err(ext2fs_namei(fs, EXT2_ROOT_INO, EXT2_ROOT_INO, name, &ino),
		  "ext2fs_namei");
	return ino;
}

static blk64_t acl_block(ext2_ino_t ino)
{
	struct ext2_inode inode;

	check_err(ext2fs_read_inode(fs, ino, &inode), "ext2fs_read_inode");
	return ext2fs_file_acl_block(fs, &inode);
}

static int set_str(ext2_ino_t ino, const char *name, const char *val, int flags)
{
	return xcodec_set(fs, ino, name, val, strlen(val), flags);
}

/* The value of name must be exactly val[0..len). */
static void check_value(ext2_ino_t ino, const char *name, const void *val,
			size_t len)
{
	char *buf = malloc(len + 1);

	CHECK(buf != NULL);
	CHECK_EQ(xcodec_get(fs, ino, name, NULL, 0), len);
	CHECK_EQ(xcodec_get(fs, ino, name, buf, len + 1), len);
	CHECK(memcmp(buf, val, len) == 0);
	free(buf);
}

static void check_str(ext2_ino_t ino, const char *name, const char *val)
{
	check_value(ino, name, val, strlen(val));
}

/* Number of names in a NUL-separated list of len bytes, or -1 when one of
 * them is not in want[] or appears twice. */
static int match_list(const char *list, size_t len, const char *const *want,
		      int nwant)
{
	int seen[MAX_ATTRS] = { 0 }, n = 0;

	CHECK(nwant <= MAX_ATTRS);
	for (const char *p = list; p < list + len; p += strlen(p) + 1) {
		int i;

		for (i = 0; i < nwant; i++)
			if (strcmp(p, want[i]) == 0)
				break;
		if (i == nwant || seen[i]++) {
			fprintf(stderr, "unexpected or repeated '%s'\n", p);
			return -1;
		}
		n++;
	}
	return n;
}

/* xcodec_list of ino must give exactly the names in want[]. */
static void check_list(ext2_ino_t ino, const char *const *want, int nwant)
{
	size_t total = 0;
	char *buf;

	for (int i = 0; i < nwant; i++)
		total += strlen(want[i]) + 1;
	CHECK_EQ(xcodec_list(fs, ino, NULL, 0), total);
	buf = malloc(total + 1);
	CHECK(buf != NULL);
	CHECK_EQ(xcodec_list(fs, ino, buf, total + 1), total);
	CHECK_EQ(match_list(buf, total, want, nwant), nwant);
	if (total) {
		CHECK_EQ(xcodec_list(fs, ino, buf, total), total);
		CHECK_EQ(xcodec_list(fs, ino, buf, total - 1), -ERANGE);
	}
	free(buf);
}

/* ---- ACL values ---- */

#define ID_NONE	0xffffffffu

struct acl_ent {
	uint16_t tag, perm;
	uint32_t id;
};

#define U_OBJ(perm)	{ 0x01, perm, ID_NONE }
#define USER(perm, id)	{ 0x02, perm, id }
#define G_OBJ(perm)	{ 0x04, perm, ID_NONE }
#define GROUP(perm, id)	{ 0x08, perm, id }
#define MASK(perm)	{ 0x10, perm, ID_NONE }
#define OTHER(perm)	{ 0x20, perm, ID_NONE }
#define NENT(a)		((int)(sizeof(a) / sizeof((a)[0])))

static void put16(unsigned char *p, uint16_t v)
{
	p[0] = v;
	p[1] = v >> 8;
}

static void put32(unsigned char *p, uint32_t v)
{
	put16(p, v);
	put16(p + 2, v >> 16);
}

/* Build an ACL in the Linux xattr format (version 2, 8-byte entries). */
static size_t acl_linux(unsigned char *out, uint32_t version,
			const struct acl_ent *e, int n)
{
	put32(out, version);
	for (int i = 0; i < n; i++) {
		put16(out + 4 + 8 * i, e[i].tag);
		put16(out + 6 + 8 * i, e[i].perm);
		put32(out + 8 + 8 * i, e[i].id);
	}
	return 4 + 8 * (size_t)n;
}

/* The same ACL in ext4's on-disk format (version 1, ids only for USER and
 * GROUP entries). */
static size_t acl_disk(unsigned char *out, const struct acl_ent *e, int n)
{
	size_t len = 4;

	put32(out, 1);
	for (int i = 0; i < n; i++) {
		put16(out + len, e[i].tag);
		put16(out + len + 2, e[i].perm);
		len += 4;
		if (e[i].tag == 0x02 || e[i].tag == 0x08) {
			put32(out + len, e[i].id);
			len += 4;
		}
	}
	return len;
}

/* USER_OBJ rw-, USER 1000 rw-, GROUP_OBJ r--, GROUP 100 r-x, MASK rwx,
 * OTHER r-- */
static const struct acl_ent file_acl[] = {
	U_OBJ(6), USER(6, 1000), G_OBJ(4), GROUP(5, 100), MASK(7), OTHER(4),
};
/* USER_OBJ rwx, GROUP_OBJ r-x, OTHER r-x: no mask needed */
static const struct acl_ent dir_default_acl[] = {
	U_OBJ(7), G_OBJ(5), OTHER(5),
};
static const struct acl_ent dir_access_acl[] = {
	U_OBJ(7), G_OBJ(5), GROUP(7, 4242), MASK(7), OTHER(0),
};

static unsigned char file_acl_val[64], dir_default_val[64], dir_access_val[64];
static size_t file_acl_len, dir_default_len, dir_access_len;

/* Read name through a libext2fs handle of its own: in raw mode, the bytes
 * as stored. */
static size_t lib_get(ext2_ino_t ino, const char *name, void *buf,
		      size_t size, int raw)
{
	struct ext2_xattr_handle *h;
	unsigned int flags = raw ? XATTR_HANDLE_FLAG_RAW : 0;
	void *val;
	size_t len;

	check_err(ext2fs_xattrs_open(fs, ino, &h), "ext2fs_xattrs_open");
	ext2fs_xattrs_flags(h, &flags, NULL);
	check_err(ext2fs_xattrs_read(h), "ext2fs_xattrs_read");
	check_err(ext2fs_xattr_get(h, name, &val, &len), "ext2fs_xattr_get");
	CHECK(len <= size);
	memcpy(buf, val, len);
	ext2fs_free_mem(&val);
	ext2fs_xattrs_close(&h);
	return len;
}

/* Store bytes under name as they are, through libext2fs in raw mode. */
static void raw_set(ext2_ino_t ino, const char *name, const void *val,
		    size_t len)
{
	struct ext2_xattr_handle *h;
	unsigned int flags = XATTR_HANDLE_FLAG_RAW;

	check_err(ext2fs_xattrs_open(fs, ino, &h), "ext2fs_xattrs_open");
	ext2fs_xattrs_flags(h, &flags, NULL);
	check_err(ext2fs_xattrs_read(h), "ext2fs_xattrs_read");
	check_err(ext2fs_xattr_set(h, name, val, len), "ext2fs_xattr_set");
	ext2fs_xattrs_close(&h);
}

/* ---- tests through libext2fs ---- */

static void setup(void)
{
	CHECK(mkdtemp(tmpdir) != NULL);
	snprintf(img, sizeof(img), "%s/ext4.img", tmpdir);
	snprintf(img_ea, sizeof(img_ea), "%s/ea_inode.img", tmpdir);
	snprintf(mnt, sizeof(mnt), "%s/mnt", tmpdir);
	snprintf(fsck_log, sizeof(fsck_log), "%s/fsck.log", tmpdir);
	CHECK_EQ(mkdir(mnt, 0755), 0);
	CHECK_EQ(run("truncate -s 16M '%s' && mkfs.ext4 -q -F -b 4096 '%s' 16M",
		     img, img), 0);
	open_fs(img);
	CHECK_EQ(EXT2_INODE_SIZE(fs->super), 256);
	CHECK(!ext2fs_has_feature_ea_inode(fs->super));

	ino_file = make_file("file");
	ino_max = make_file("max");
	ino_many = make_file("many");
	ino_scratch = make_file("scratch");
	check_err(ext2fs_mkdir(fs, EXT2_ROOT_INO, 0, "dir"), "ext2fs_mkdir");
	ino_dir = lookup("dir");
	check_err(ext2fs_symlink(fs, EXT2_ROOT_INO, 0, "link", "file"),
		  "ext2fs_symlink");
	ino_link = lookup("link");

	file_acl_len = acl_linux(file_acl_val, 2, file_acl, NENT(file_acl));
	dir_default_len = acl_linux(dir_default_val, 2, dir_default_acl,
				    NENT(dir_default_acl));
	dir_access_len = acl_linux(dir_access_val, 2, dir_access_acl,
				   NENT(dir_access_acl));
}

static void test_errno_mapping(void)
{
	CHECK_EQ(fs_errno(0), 0);
	CHECK_EQ(fs_errno(EXT2_ET_NO_MEMORY), -ENOMEM);
	CHECK_EQ(fs_errno(EXT2_ET_EA_NO_SPACE), -ENOSPC);
	CHECK_EQ(fs_errno(EXT2_ET_BLOCK_ALLOC_FAIL), -ENOSPC);
	CHECK_EQ(fs_errno(EXT2_ET_EA_KEY_NOT_FOUND), -ENODATA);
	CHECK_EQ(fs_errno(EXT2_ET_RO_FILSYS), -EROFS);
	CHECK_EQ(fs_errno(EXT2_ET_INODE_CSUM_INVALID), -EIO);
	CHECK_EQ(fs_errno(EXT2_ET_EXT_ATTR_CSUM_INVALID), -EIO);
	CHECK_EQ(fs_errno(EXT2_ET_BAD_EA_HEADER), -EIO);
	CHECK_EQ(fs_errno(EXT2_ET_DIR_CORRUPTED), -EIO);
	CHECK_EQ(fs_errno(EXT2_ET_FILE_NOT_FOUND), -ENOENT);
	CHECK_EQ(fs_errno(EXT2_ET_MISSING_EA_FEATURE), -EOPNOTSUPP);
	CHECK_EQ(fs_errno(EIO), -EIO);
	CHECK_EQ(fs_errno(ENOSPC), -ENOSPC);
	CHECK_EQ(fs_errno(EINVAL), -EINVAL);
	CHECK_EQ(fs_errno(12345678), -EIO);
}

static void test_get_set(void)
{
	char buf[16];

	CHECK_EQ(xcodec_get(fs, ino_file, "user.a", NULL, 0), -ENODATA);
	CHECK_EQ(set_str(ino_file, "user.a", "hello", 0), 0);
	CHECK_EQ(xcodec_get(fs, ino_file, "user.a", NULL, 0), 5);
	CHECK_EQ(xcodec_get(fs, ino_file, "user.a", buf, 4), -ERANGE);
	CHECK_EQ(xcodec_get(fs, ino_file, "user.a", buf, 5), 5);
	CHECK(memcmp(buf, "hello", 5) == 0);
	CHECK_EQ(xcodec_get(fs, ino_file, "user.b", buf, sizeof(buf)), -ENODATA);

	/* an empty value is a value */
	CHECK_EQ(xcodec_set(fs, ino_file, "user.empty", "", 0, 0), 0);
	CHECK_EQ(xcodec_get(fs, ino_file, "user.empty", NULL, 0), 0);
	CHECK_EQ(xcodec_get(fs, ino_file, "user.empty", buf, sizeof(buf)), 0);

	/* binary values, overwritten in place with a shorter one */
	CHECK_EQ(xcodec_set(fs, ino_file, "user.bin", "a\0b\0c", 5, 0), 0);
	check_value(ino_file, "user.bin", "a\0b\0c", 5);
	CHECK_EQ(xcodec_set(fs, ino_file, "user.bin", "\0\1", 2, 0), 0);
	check_value(ino_file, "user.bin", "\0\1", 2);

	CHECK_EQ(set_str(ino_file, "trusted.t", "trust", 0), 0);
	CHECK_EQ(set_str(ino_file, "security.s", "secure", 0), 0);
	check_str(ino_file, "trusted.t", "trust");
	check_str(ino_file, "security.s", "secure");
	/* the root directory too */
	CHECK_EQ(set_str(EXT2_ROOT_INO, "user.root", "r00t", 0), 0);
	check_str(EXT2_ROOT_INO, "user.root", "r00t");
}

static void test_flags(void)
{
	CHECK_EQ(set_str(ino_file, "user.a", "x", XATTR_CREATE), -EEXIST);
	check_str(ino_file, "user.a", "hello");
	CHECK_EQ(set_str(ino_file, "user.new", "x", XATTR_REPLACE), -ENODATA);
	CHECK_EQ(xcodec_get(fs, ino_file, "user.new", NULL, 0), -ENODATA);
	CHECK_EQ(set_str(ino_file, "user.a", "world!", XATTR_REPLACE), 0);
	check_str(ino_file, "user.a", "world!");
	CHECK_EQ(set_str(ino_file, "user.new", "fresh", XATTR_CREATE), 0);
	check_str(ino_file, "user.new", "fresh");
	CHECK_EQ(set_str(ino_file, "user.a", "x", XATTR_CREATE | XATTR_REPLACE),
		 -EEXIST);
	CHECK_EQ(set_str(ino_file, "user.none", "x",
			 XATTR_CREATE | XATTR_REPLACE), -ENODATA);
	CHECK_EQ(set_str(ino_file, "user.a", "x", 0x10), -EINVAL);
	check_str(ino_file, "user.a", "world!");
	/* setting the same value again is fine */
	CHECK_EQ(set_str(ino_file, "user.a", "world!", 0), 0);
	check_str(ino_file, "user.a", "world!");
}

/* "user." and 250 more bytes: the longest name there can be */
static void long_name(char *name)
{
	strcpy(name, "user.");
	memset(name + 5, 'n', 250);
	name[255] = '\0';
}

static void test_names(void)
{
	static const char *const unsupported[] = {
		"foo.bar", "system.foo", "system.richacl", "system.data",
		"gnu.x", "system.posix_acl_accessX", "userx", "user",
		"system.posix_acl_default2",
	};
	char name[300];

	for (int i = 0; i < NENT(unsupported); i++) {
		const char *n = unsupported[i];

		CHECK_EQ(set_str(ino_file, n, "v", 0), -EOPNOTSUPP);
		CHECK_EQ(xcodec_get(fs, ino_file, n, NULL, 0), -EOPNOTSUPP);
		CHECK_EQ(xcodec_remove(fs, ino_file, n), -EOPNOTSUPP);
	}
	CHECK_EQ(set_str(ino_file, "", "v", 0), -ERANGE);
	CHECK_EQ(set_str(ino_file, "user.", "v", 0), -EINVAL);
	CHECK_EQ(set_str(ino_file, "trusted.", "v", 0), -EINVAL);
	CHECK_EQ(set_str(ino_file, "security.", "v", 0), -EINVAL);
	CHECK_EQ(xcodec_get(fs, ino_file, "user.", NULL, 0), -EINVAL);

	/* 255 bytes is the longest name */
	long_name(name);
	CHECK_EQ(set_str(ino_file, name, "long", 0), 0);
	check_str(ino_file, name, "long");
	strcat(name, "n");
	CHECK_EQ(set_str(ino_file, name, "long", 0), -ERANGE);
	CHECK_EQ(xcodec_get(fs, ino_file, name, NULL, 0), -ERANGE);
	CHECK_EQ(xcodec_remove(fs, ino_file, name), -ERANGE);
}

static void test_list_and_remove(void)
{
	char name[256];
	const char *want[8];
	int n = 0;

	long_name(name);
	want[n++] = "user.a";
	want[n++] = "user.empty";
	want[n++] = "user.bin";
	want[n++] = "user.new";
	want[n++] = "trusted.t";
	want[n++] = "security.s";
	want[n++] = name;
	check_list(ino_file, want, n);

	CHECK_EQ(set_str(ino_file, "user.gone", "bye", 0), 0);
	CHECK_EQ(xcodec_remove(fs, ino_file, "user.gone"), 0);
	CHECK_EQ(xcodec_get(fs, ino_file, "user.gone", NULL, 0), -ENODATA);
	CHECK_EQ(xcodec_remove(fs, ino_file, "user.gone"), -ENODATA);
	CHECK_EQ(xcodec_remove(fs, ino_file, "user.never"), -ENODATA);
	check_list(ino_file, want, n);

	/* an inode without attributes */
	check_list(ino_scratch, NULL, 0);
	CHECK_EQ(xcodec_list(fs, ino_scratch, NULL, 0), 0);
}

static void test_spill_to_block(void)
{
	static unsigned char big[3000];

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (unsigned char)(i * 7 + 3);
	/* 3000 bytes cannot live in a 256-byte inode */
	CHECK_EQ(xcodec_set(fs, ino_file, "user.big", big, sizeof(big), 0), 0);
	CHECK(acl_block(ino_file) != 0);
	check_value(ino_file, "user.big", big, sizeof(big));
	check_str(ino_file, "user.a", "world!");
	CHECK_EQ(xcodec_get(fs, ino_file, "user.big", big, sizeof(big) - 1),
		 -ERANGE);

	/* a value shrinking back into the inode frees the block it leaves
	 * empty, and the block's space */
	blk64_t free0 = ext2fs_free_blocks_count(fs->super);

	CHECK_EQ(set_str(ino_scratch, "user.in", "inode", 0), 0);
	CHECK_EQ(acl_block(ino_scratch), 0);
	CHECK_EQ(xcodec_set(fs, ino_scratch, "user.out", big, sizeof(big), 0), 0);
	CHECK(acl_block(ino_scratch) != 0);
	CHECK_EQ(ext2fs_free_blocks_count(fs->super), free0 - 1);
	CHECK_EQ(set_str(ino_scratch, "user.out", "back in", 0), 0);
	CHECK_EQ(acl_block(ino_scratch), 0);
	CHECK_EQ(ext2fs_free_blocks_count(fs->super), free0);
	check_str(ino_scratch, "user.out", "back in");
	check_str(ino_scratch, "user.in", "inode");

	/* so does removing the block's last entry, keeping the inode's */
	CHECK_EQ(xcodec_set(fs, ino_scratch, "user.out", big, sizeof(big), 0), 0);
	CHECK(acl_block(ino_scratch) != 0);
	CHECK_EQ(xcodec_remove(fs, ino_scratch, "user.out"), 0);
	CHECK_EQ(acl_block(ino_scratch), 0);
	CHECK_EQ(ext2fs_free_blocks_count(fs->super), free0);
	check_str(ino_scratch, "user.in", "inode");
	CHECK_EQ(xcodec_remove(fs, ino_scratch, "user.in"), 0);
	CHECK_EQ(xcodec_list(fs, ino_scratch, NULL, 0), 0);
}

static void test_value_limit(void)
{
	/* an attribute block has 4096 - 32 (header) - 4 (end marker) bytes,
	 * of which an entry named "max" takes 20 */
	const size_t max = 4096 - 32 - 4 - 20;
	unsigned char *v = malloc(70000);
	blk64_t free0;

	CHECK(v != NULL);
	memset(v, 'M', 70000);
	CHECK_EQ(xcodec_set(fs, ino_max, "user.max", v, max + 1, 0), -ENOSPC);
	CHECK_EQ(xcodec_set(fs, ino_max, "user.max", v, 70000, 0), -ENOSPC);
	CHECK_EQ(xcodec_get(fs, ino_max, "user.max", NULL, 0), -ENODATA);

	free0 = ext2fs_free_blocks_count(fs->super);
	CHECK_EQ(acl_block(ino_max), 0);
	CHECK_EQ(xcodec_set(fs, ino_max, "user.max", v, max, 0), 0);
	CHECK(acl_block(ino_max) != 0);
	CHECK_EQ(ext2fs_free_blocks_count(fs->super), free0 - 1);
	check_value(ino_max, "user.max", v, max);
	memset(v, 'N', max);
	CHECK_EQ(xcodec_set(fs, ino_max, "user.max", v, max, XATTR_REPLACE), 0);
	check_value(ino_max, "user.max", v, max);

	/* the block is freed with its last attribute */
	CHECK_EQ(xcodec_remove(fs, ino_max, "user.max"), 0);
	CHECK_EQ(acl_block(ino_max), 0);
	CHECK_EQ(ext2fs_free_blocks_count(fs->super), free0);

	/* keep one for the kernel, next to a small one in the inode */
	CHECK_EQ(set_str(ino_max, "user.s", "small", 0), 0);
	memset(v, 'O', max);
	CHECK_EQ(xcodec_set(fs, ino_max, "user.max", v, max, 0), 0);
	check_value(ino_max, "user.max", v, max);
	check_str(ino_max, "user.s", "small");
	free(v);
}

static void test_enospc(void)
{
	char name[32], val[100], got[100];
	static char big[1000];
	int n, ret = 0;

	for (n = 0; n < 1000; n++) {
		snprintf(name, sizeof(name), "user.n%03d", n);
		memset(val, 'a' + n % 26, sizeof(val));
		ret = xcodec_set(fs, ino_many, name, val, sizeof(val), 0);
		if (ret)
			break;
	}
	CHECK_EQ(ret, -ENOSPC);
	/* 4060 bytes of block, 120 per attribute */
	CHECK(n >= 30 && n < 40);
	snprintf(name, sizeof(name), "user.n%03d", n);
	CHECK_EQ(xcodec_get(fs, ino_many, name, NULL, 0), -ENODATA);

	/* would fit an empty block: ENOSPC, not ERANGE */
	memset(big, 'B', sizeof(big));
	CHECK_EQ(xcodec_set(fs, ino_many, "user.big", big, sizeof(big), 0),
		 -ENOSPC);
	/* a failed replacement keeps the old value */
	CHECK_EQ(xcodec_set(fs, ino_many, "user.n000", big, sizeof(big), 0),
		 -ENOSPC);
	/* flags are checked before space */
	CHECK_EQ(xcodec_set(fs, ino_many, "user.n000", big, sizeof(big),
			 XATTR_CREATE), -EEXIST);

	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "user.n%03d", i);
		memset(val, 'a' + i % 26, sizeof(val));
		CHECK_EQ(xcodec_get(fs, ino_many, name, got, sizeof(got)),
			 sizeof(val));
		CHECK(memcmp(got, val, sizeof(val)) == 0);
	}
	CHECK_EQ(xcodec_list(fs, ino_many, NULL, 0), (ssize_t)n * 10);

	/* room again after a removal */
	CHECK_EQ(xcodec_remove(fs, ino_many, "user.n001"), 0);
	CHECK_EQ(set_str(ino_many, "user.again", "yes", 0), 0);
	check_str(ino_many, "user.again", "yes");
}

static int set_acl(ext2_ino_t ino, const char *name, const void *v,
		   size_t len, int flags)
{
	return xcodec_set(fs, ino, name, v, len, flags);
}

static ssize_t get_acl(ext2_ino_t ino, const char *name, void *buf,
		       size_t size)
{
	return xcodec_get(fs, ino, name, buf, size);
}

static void test_acl_round_trip(void)
{
	unsigned char buf[128], disk[64], lib[128];
	size_t len, dlen;

	CHECK_EQ(file_acl_len, 52);
	CHECK_EQ(get_acl(ino_file, ACL_A, NULL, 0), -ENODATA);
	CHECK_EQ(set_acl(ino_file, ACL_A, file_acl_val, file_acl_len, 0), 0);
	CHECK_EQ(get_acl(ino_file, ACL_A, NULL, 0), file_acl_len);
	CHECK_EQ(get_acl(ino_file, ACL_A, buf, file_acl_len - 1), -ERANGE);
	CHECK_EQ(get_acl(ino_file, ACL_A, buf, sizeof(buf)), file_acl_len);
	CHECK(memcmp(buf, file_acl_val, file_acl_len) == 0);

	/* stored in ext4's format: libext2fs converted it */
	dlen = acl_disk(disk, file_acl, NENT(file_acl));
	CHECK_EQ(dlen, 36);
	len = lib_get(ino_file, ACL_A, buf, sizeof(buf), 1);
	CHECK_EQ(len, dlen);
	CHECK(memcmp(buf, disk, dlen) == 0);

	/* libext2fs's own reader converts back too, tags, perms and named ids
	 * intact (fs_xattr_codec.c does not use it: see there why) */
	len = lib_get(ino_file, ACL_A, lib, sizeof(lib), 0);
	CHECK_EQ(len, file_acl_len);
	CHECK(memcmp(lib, file_acl_val, 4) == 0);
	for (int i = 0; i < NENT(file_acl); i++) {
		unsigned char *l = lib + 4 + 8 * i;
		unsigned char *f = file_acl_val + 4 + 8 * i;

		CHECK(memcmp(l, f, 4) == 0);
		if (file_acl[i].tag == 0x02 || file_acl[i].tag == 0x08)
			CHECK(memcmp(l + 4, f + 4, 4) == 0);
	}

	/* ids of entries without a qualifier read back as the kernel writes
	 * them, whatever was passed in */
	struct acl_ent zero_ids[NENT(file_acl)];
	unsigned char v[64];
	size_t vlen;

	memcpy(zero_ids, file_acl, sizeof(zero_ids));
	for (int i = 0; i < NENT(zero_ids); i++)
		if (zero_ids[i].id == ID_NONE)
			zero_ids[i].id = 0;
	vlen = acl_linux(v, 2, zero_ids, NENT(zero_ids));
	CHECK_EQ(set_acl(ino_file, ACL_A, v, vlen, 0), 0);
	CHECK_EQ(get_acl(ino_file, ACL_A, buf, sizeof(buf)), file_acl_len);
	CHECK(memcmp(buf, file_acl_val, file_acl_len) == 0);

	/* flags do not apply to ACLs (as on ext4) */
	CHECK_EQ(set_acl(ino_file, ACL_A, file_acl_val, file_acl_len,
			 XATTR_CREATE), 0);
	CHECK_EQ(set_acl(ino_dir, ACL_A, dir_access_val, dir_access_len,
			 XATTR_REPLACE), 0);
	check_value(ino_dir, ACL_A, dir_access_val, dir_access_len);
}

static void test_acl_default_and_targets(void)
{
	unsigned char hdr[4];

	put32(hdr, 2);
	CHECK_EQ(set_acl(ino_dir, ACL_D, dir_default_val, dir_default_len, 0),
		 0);
	check_value(ino_dir, ACL_D, dir_default_val, dir_default_len);

	/* a default ACL belongs to a directory only */
	CHECK_EQ(set_acl(ino_file, ACL_D, dir_default_val, dir_default_len, 0),
		 -EACCES);
	CHECK_EQ(set_acl(ino_file, ACL_D, hdr, sizeof(hdr), 0), 0);
	CHECK_EQ(xcodec_remove(fs, ino_file, ACL_D), 0);
	CHECK_EQ(get_acl(ino_file, ACL_D, NULL, 0), -ENODATA);

	/* no ACLs on symlinks */
	CHECK_EQ(set_acl(ino_link, ACL_A, file_acl_val, file_acl_len, 0),
		 -EOPNOTSUPP);
	CHECK_EQ(xcodec_remove(fs, ino_link, ACL_A), -EOPNOTSUPP);
	CHECK_EQ(get_acl(ino_link, ACL_A, NULL, 0), -ENODATA);
}

static void test_acl_remove(void)
{
	unsigned char hdr[4];

	put32(hdr, 2);
	/* the header alone removes the ACL, present or not */
	CHECK_EQ(set_acl(ino_scratch, ACL_A, file_acl_val, file_acl_len, 0), 0);
	CHECK_EQ(set_acl(ino_scratch, ACL_A, hdr, sizeof(hdr), 0), 0);
	CHECK_EQ(get_acl(ino_scratch, ACL_A, NULL, 0), -ENODATA);
	CHECK_EQ(set_acl(ino_scratch, ACL_A, hdr, sizeof(hdr), XATTR_REPLACE),
		 0);

	/* removexattr of an absent ACL succeeds, as on ext4 */
	CHECK_EQ(set_acl(ino_scratch, ACL_A, file_acl_val, file_acl_len, 0), 0);
	CHECK_EQ(xcodec_remove(fs, ino_scratch, ACL_A), 0);
	CHECK_EQ(get_acl(ino_scratch, ACL_A, NULL, 0), -ENODATA);
	CHECK_EQ(xcodec_remove(fs, ino_scratch, ACL_A), 0);
	CHECK_EQ(xcodec_list(fs, ino_scratch, NULL, 0), 0);
	CHECK_EQ(acl_block(ino_scratch), 0);
}

static void check_bad_acl(const struct acl_ent *e, int n, uint32_t version,
			  int want)
{
	unsigned char v[128];
	size_t len = acl_linux(v, version, e, n);

	CHECK_EQ(set_acl(ino_scratch, ACL_A, v, len, 0), want);
}

static void test_acl_malformed(void)
{
	static const struct acl_ent bad_perm[] = {
		U_OBJ(0x16), G_OBJ(4), OTHER(4),
	};
	static const struct acl_ent bad_tag[] = {
		U_OBJ(6), { 0x40, 4, ID_NONE }, OTHER(4),
	};
	static const struct acl_ent no_mask[] = {
		U_OBJ(6), USER(6, 5), G_OBJ(4), OTHER(4),
	};
	static const struct acl_ent no_other[] = {
		U_OBJ(6), G_OBJ(4),
	};
	static const struct acl_ent bad_order[] = {
		G_OBJ(4), U_OBJ(6), OTHER(4),
	};
	static const struct acl_ent undefined_uid[] = {
		U_OBJ(6), USER(6, ID_NONE), G_OBJ(4), MASK(6), OTHER(4),
	};
	static const struct acl_ent two_others[] = {
		U_OBJ(6), G_OBJ(4), OTHER(4), OTHER(4),
	};
	unsigned char v[64];

	check_bad_acl(bad_perm, NENT(bad_perm), 2, -EINVAL);
	check_bad_acl(bad_tag, NENT(bad_tag), 2, -EINVAL);
	check_bad_acl(no_mask, NENT(no_mask), 2, -EINVAL);
	check_bad_acl(no_other, NENT(no_other), 2, -EINVAL);
	check_bad_acl(bad_order, NENT(bad_order), 2, -EINVAL);
	check_bad_acl(undefined_uid, NENT(undefined_uid), 2, -EINVAL);
	check_bad_acl(two_others, NENT(two_others), 2, -EINVAL);
	/* the kernel answers an unknown version with EOPNOTSUPP */
	check_bad_acl(file_acl, NENT(file_acl), 1, -EOPNOTSUPP);

	memcpy(v, file_acl_val, file_acl_len);
	CHECK_EQ(set_acl(ino_scratch, ACL_A, v, file_acl_len - 2, 0), -EINVAL);
	CHECK_EQ(set_acl(ino_scratch, ACL_A, v, 2, 0), -EINVAL);
	CHECK_EQ(set_acl(ino_scratch, ACL_A, NULL, 0, 0), -EINVAL);
	CHECK_EQ(get_acl(ino_scratch, ACL_A, NULL, 0), -ENODATA);
}

/* Bytes on disk that are not an ext4 ACL read as -EIO, never past their
 * end; an ACL without entries reads as none. */
static void test_acl_corrupt_on_disk(void)
{
	unsigned char v[16], buf[64];

	/* version 1, USER_OBJ, then half an entry */
	put32(v, 1);
	put16(v + 4, 0x01);
	put16(v + 6, 6);
	put16(v + 8, 0x20);
	raw_set(ino_scratch, ACL_A, v, 10);
	CHECK_EQ(get_acl(ino_scratch, ACL_A, buf, sizeof(buf)), -EIO);
	/* a named entry cut short */
	put16(v + 8, 0x02);
	put16(v + 10, 6);
	raw_set(ino_scratch, ACL_A, v, 14);
	CHECK_EQ(get_acl(ino_scratch, ACL_A, NULL, 0), -EIO);
	/* the Linux version on disk */
	put32(v, 2);
	raw_set(ino_scratch, ACL_A, v, 8);
	CHECK_EQ(get_acl(ino_scratch, ACL_A, NULL, 0), -EIO);
	/* an unknown tag */
	put32(v, 1);
	put16(v + 4, 0x40);
	raw_set(ino_scratch, ACL_A, v, 8);
	CHECK_EQ(get_acl(ino_scratch, ACL_A, NULL, 0), -EIO);
	/* the header alone */
	raw_set(ino_scratch, ACL_A, v, 4);
	CHECK_EQ(get_acl(ino_scratch, ACL_A, buf, sizeof(buf)), -ENODATA);

	CHECK_EQ(xcodec_remove(fs, ino_scratch, ACL_A), 0);
	CHECK_EQ(xcodec_list(fs, ino_scratch, NULL, 0), 0);
}

static void test_final_list(void)
{
	char name[256];
	const char *want[10];
	int n = 0;

	long_name(name);
	want[n++] = "user.a";
	want[n++] = "user.empty";
	want[n++] = "user.bin";
	want[n++] = "user.new";
	want[n++] = "user.big";
	want[n++] = "trusted.t";
	want[n++] = "security.s";
	want[n++] = ACL_A;
	want[n++] = name;
	check_list(ino_file, want, n);

	const char *dir_want[] = { ACL_A, ACL_D };

	check_list(ino_dir, dir_want, 2);
}

/* ---- what the kernel sees ---- */

struct snap_attr {
	char *name;
	void *value;
	size_t len;
};

struct snap {
	const char *path;	/* relative to the mount point */
	int n;
	struct snap_attr a[MAX_ATTRS];
};

static struct snap snaps[6];
static int nsnaps;

/* Record every attribute of ino as fs_xattr reads it. */
static void snapshot(ext2_ino_t ino, const char *path)
{
	struct snap *s = &snaps[nsnaps++];
	ssize_t total = xcodec_list(fs, ino, NULL, 0);
	char *list;

	CHECK(total >= 0);
	list = malloc(total + 1);
	CHECK(list != NULL);
	CHECK_EQ(xcodec_list(fs, ino, list, total), total);
	s->path = path;
	for (char *p = list; p < list + total; p += strlen(p) + 1) {
		struct snap_attr *a = &s->a[s->n++];
		ssize_t len = xcodec_get(fs, ino, p, NULL, 0);

		CHECK(s->n <= MAX_ATTRS);
		CHECK(len >= 0);
		a->name = strdup(p);
		a->value = malloc(len + 1);
		CHECK(a->name && a->value);
		CHECK_EQ(xcodec_get(fs, ino, p, a->value, len), len);
		a->len = len;
	}
	free(list);
}

static void snap_free(void)
{
	for (int i = 0; i < nsnaps; i++) {
		for (int j = 0; j < snaps[i].n; j++) {
			free(snaps[i].a[j].name);
			free(snaps[i].a[j].value);
		}
		snaps[i].n = 0;
	}
	nsnaps = 0;
}

static void mount_ro(const char *image)
{
	if (geteuid() != 0) {
		fprintf(stderr, "test_fs_xattr_codec: must run as root: it mounts "
			"the image (mount -o ro,loop) to compare with the "
			"kernel\n");
		exit(1);
	}
	if (run("mount -o ro,loop '%s' '%s'", image, mnt) != 0) {
		fprintf(stderr, "test_fs_xattr_codec: 'mount -o ro,loop %s %s' "
			"failed: cannot compare with the kernel\n", image, mnt);
		exit(1);
	}
	mounted = 1;
}

static void unmount(void)
{
	CHECK_EQ(run("umount '%s'", mnt), 0);
	mounted = 0;
}

/* The kernel must list exactly the snapshot's names, with equal values. */
static void kernel_compare(const struct snap *s)
{
	char path[512], *list;
	const char *names[MAX_ATTRS];
	ssize_t total;

	snprintf(path, sizeof(path), "%s/%s", mnt, s->path);
	total = llistxattr(path, NULL, 0);
	CHECK(total >= 0);
	list = malloc(total + 1);
	CHECK(list != NULL);
	CHECK_EQ(llistxattr(path, list, total), total);
	for (int i = 0; i < s->n; i++)
		names[i] = s->a[i].name;
	CHECK_EQ(match_list(list, total, names, s->n), s->n);
	free(list);

	for (int i = 0; i < s->n; i++) {
		const struct snap_attr *a = &s->a[i];
		char *v = malloc(a->len + 1);

		CHECK(v != NULL);
		CHECK_EQ(lgetxattr(path, a->name, NULL, 0), a->len);
		CHECK_EQ(lgetxattr(path, a->name, v, a->len + 1), a->len);
		if (memcmp(v, a->value, a->len) != 0)
			fprintf(stderr, "%s: %s differs\n", path, a->name);
		CHECK(memcmp(v, a->value, a->len) == 0);
		free(v);
	}
}

static void kernel_check_acl(const char *rel, const char *name,
			     const void *want, size_t len)
{
	char path[512];
	unsigned char buf[256];

	snprintf(path, sizeof(path), "%s/%s", mnt, rel);
	CHECK_EQ(lgetxattr(path, name, buf, sizeof(buf)), len);
	CHECK(memcmp(buf, want, len) == 0);
}

static void test_kernel_view(void)
{
	snapshot(EXT2_ROOT_INO, ".");
	snapshot(ino_file, "file");
	snapshot(ino_dir, "dir");
	snapshot(ino_max, "max");
	snapshot(ino_many, "many");
	snapshot(ino_scratch, "scratch");
	CHECK_EQ(snaps[1].n, 9);
	close_and_fsck(img);

	mount_ro(img);
	for (int i = 0; i < nsnaps; i++)
		kernel_compare(&snaps[i]);
	kernel_check_acl("file", ACL_A, file_acl_val, file_acl_len);
	kernel_check_acl("dir", ACL_A, dir_access_val, dir_access_len);
	kernel_check_acl("dir", ACL_D, dir_default_val, dir_default_len);
	unmount();
	snap_free();
}

/* A second image, with ea_inode (values beyond a block go to inodes of
 * their own) and inline_data, made with a small file in it. */
static ext2_ino_t ino_ea, ino_inline;

static void setup_second_image(void)
{
	snprintf(src, sizeof(src), "%s/src", tmpdir);
	CHECK_EQ(run("mkdir '%s' && printf 'inline bytes' > '%s/small'",
		     src, src), 0);
	CHECK_EQ(run("truncate -s 16M '%s' && mkfs.ext4 -q -F -b 4096 "
		     "-O ea_inode,inline_data -d '%s' '%s' 16M",
		     img_ea, src, img_ea), 0);
	open_fs(img_ea);
	CHECK(ext2fs_has_feature_ea_inode(fs->super));
	ino_ea = make_file("file");
	ino_inline = lookup("small");
}

/* The blocks ino is charged for, in 512-byte sectors (no huge_file). */
static blk64_t iblocks(ext2_ino_t ino)
{
	struct ext2_inode inode;

	check_err(ext2fs_read_inode(fs, ino, &inode), "ext2fs_read_inode");
	return inode.i_blocks;
}

static void test_ea_inode(void)
{
	const size_t n = 65536;
	unsigned char *v = malloc(n + 1);

	CHECK(v != NULL);
	for (size_t i = 0; i <= n; i++)
		v[i] = (unsigned char)(i % 251);

	CHECK_EQ(xcodec_set(fs, ino_ea, "user.huge", v, n + 1, 0), -ENOSPC);
	CHECK_EQ(xcodec_set(fs, ino_ea, "user.huge", v, n, 0), 0);
	check_value(ino_ea, "user.huge", v, n);
	/* its 16 blocks are charged to the owner (whose entries all fit in
	 * the inode: no attribute block) */
	CHECK_EQ(iblocks(ino_ea), 16 * 8);
	CHECK_EQ(acl_block(ino_ea), 0);
	CHECK_EQ(xcodec_set(fs, ino_ea, "user.mid", v + 1, 20000, 0), 0);
	check_value(ino_ea, "user.mid", v + 1, 20000);
	CHECK_EQ(iblocks(ino_ea), (16 + 5) * 8);

	CHECK_EQ(xcodec_set(fs, ino_ea, "user.gone", v + 2, 10000, 0), 0);
	CHECK_EQ(xcodec_remove(fs, ino_ea, "user.gone"), 0);
	CHECK_EQ(xcodec_get(fs, ino_ea, "user.gone", NULL, 0), -ENODATA);
	/* a value moving out of its EA inode gives its blocks back */
	CHECK_EQ(xcodec_set(fs, ino_ea, "user.shrink", v + 3, 30000, 0), 0);
	CHECK_EQ(iblocks(ino_ea), (16 + 5 + 8) * 8);
	CHECK_EQ(set_str(ino_ea, "user.shrink", "tiny", 0), 0);
	check_str(ino_ea, "user.shrink", "tiny");
	CHECK_EQ(iblocks(ino_ea), (16 + 5) * 8);

	/* an entry too long for what is left of the inode goes to a block,
	 * its value (5000 bytes: 2 blocks) to an EA inode */
	char name[256];

	strcpy(name, "user.");
	memset(name + 5, 'L', 200);
	name[205] = '\0';
	CHECK_EQ(xcodec_set(fs, ino_ea, name, v + 4, 5000, 0), 0);
	check_value(ino_ea, name, v + 4, 5000);
	CHECK(acl_block(ino_ea) != 0);
	CHECK_EQ(iblocks(ino_ea), (16 + 5 + 1 + 2) * 8);
	free(v);
}

/* Inline data lives in the system.data attribute: invisible and
 * untouchable here, and kept intact by our writes. */
static void test_inline_data_hidden(void)
{
	struct ext2_inode inode;
	unsigned char buf[64];

	check_err(ext2fs_read_inode(fs, ino_inline, &inode),
		  "ext2fs_read_inode");
	CHECK(inode.i_flags & EXT4_INLINE_DATA_FL);
	CHECK_EQ(xcodec_list(fs, ino_inline, NULL, 0), 0);
	CHECK_EQ(xcodec_get(fs, ino_inline, "system.data", NULL, 0), -EOPNOTSUPP);
	CHECK_EQ(set_str(ino_inline, "system.data", "x", 0), -EOPNOTSUPP);
	CHECK_EQ(xcodec_remove(fs, ino_inline, "system.data"), -EOPNOTSUPP);

	CHECK_EQ(set_str(ino_inline, "user.next", "to inline data", 0), 0);
	CHECK_EQ(set_acl(ino_inline, ACL_A, file_acl_val, file_acl_len, 0), 0);

	const char *want[] = { "user.next", ACL_A };

	check_list(ino_inline, want, 2);
	CHECK_EQ(xcodec_remove(fs, ino_inline, "user.next"), 0);
	CHECK_EQ(set_str(ino_inline, "user.last", "kept", 0), 0);
	/* system.data is still there (the file is under 60 bytes, so its
	 * attribute holds nothing) */
	CHECK_EQ(lib_get(ino_inline, "system.data", buf, sizeof(buf), 1), 0);
}

static void test_second_kernel_view(void)
{
	char path[512], data[64];
	FILE *f;
	int rc;

	snapshot(ino_ea, "file");
	snapshot(ino_inline, "small");
	CHECK_EQ(snaps[0].n, 4);
	CHECK_EQ(snaps[1].n, 2);
	close_and_fsck(img_ea);

	mount_ro(img_ea);
	for (int i = 0; i < nsnaps; i++)
		kernel_compare(&snaps[i]);
	kernel_check_acl("small", ACL_A, file_acl_val, file_acl_len);
	/* and the inline data itself survived */
	snprintf(path, sizeof(path), "%s/small", mnt);
	f = fopen(path, "r");
	CHECK(f != NULL);
	rc = (int)fread(data, 1, sizeof(data), f);
	fclose(f);
	CHECK_EQ(rc, 12);
	CHECK(memcmp(data, "inline bytes", 12) == 0);
	unmount();
	snap_free();
}

int main(void)
{
	const char *path = getenv("PATH");
	char newpath[4096];

	/* mkfs.ext4, e2fsck and mount live in sbin */
	snprintf(newpath, sizeof(newpath), "/usr/sbin:/sbin:%s",
		 path ? path : "/usr/bin:/bin");
	setenv("PATH", newpath, 1);
	initialize_ext2_error_table();
	atexit(cleanup);

	setup();
	RUN(test_errno_mapping);
	RUN(test_get_set);
	RUN(test_flags);
	RUN(test_names);
	RUN(test_list_and_remove);
	RUN(test_spill_to_block);
	RUN(test_value_limit);
	RUN(test_enospc);
	RUN(test_acl_round_trip);
	RUN(test_acl_default_and_targets);
	RUN(test_acl_remove);
	RUN(test_acl_malformed);
	RUN(test_acl_corrupt_on_disk);
	RUN(test_final_list);
	RUN(test_kernel_view);
	setup_second_image();
	RUN(test_ea_inode);
	RUN(test_inline_data_hidden);
	RUN(test_second_kernel_view);
	printf("%d checks passed\n", checks_run);
	return 0;
}
