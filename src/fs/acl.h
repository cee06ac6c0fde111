/* POSIX ACLs in the Linux xattr format (system.posix_acl_*): how an access
 * ACL and the file mode stay in step, as the kernel's ext4 keeps them. Pure
 * functions on the bytes; the fs decides what to store. */
#ifndef KAIOFS_ACL_H
#define KAIOFS_ACL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Is this a well-formed Linux-format ACL? */
bool acl_valid(const void *value, size_t size);
/* The permission bits an access ACL implies (owner, group or mask, other);
 * *equivalent is set when the ACL says nothing beyond them. */
mode_t acl_mode(const void *value, size_t size, bool *equivalent);
/* chmod: rewrite the owner, mask (or group) and other entries from mode. */
void acl_chmod(void *value, size_t size, mode_t mode);
/* Creation under a default ACL: the new file's access ACL is the default
 * masked by the requested mode, and the mode is masked by the ACL. Edits
 * value in place; returns true when the result needs storing (it says more
 * than the mode). */
bool acl_create_masq(void *value, size_t size, mode_t *mode);

#endif
