#include "acl.h"

#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#define ACL_VERSION 2
#define TAG_USER_OBJ 0x01
#define TAG_USER 0x02
#define TAG_GROUP_OBJ 0x04
#define TAG_GROUP 0x08
#define TAG_MASK 0x10
#define TAG_OTHER 0x20

struct acl_entry {
	uint16_t tag;
	uint16_t perm;
	uint32_t id;
};

static size_t entries(size_t size)
{
	return (size - sizeof(uint32_t)) / sizeof(struct acl_entry);
}

static struct acl_entry *entry(const void *value, size_t i)
{
	return (struct acl_entry *)((char *)value + sizeof(uint32_t) + i * sizeof(struct acl_entry));
}

bool acl_valid(const void *value, size_t size)
{
	uint32_t version;

	if (size < sizeof(uint32_t) || (size - sizeof(uint32_t)) % sizeof(struct acl_entry))
		return false;
	memcpy(&version, value, sizeof(version));
	return version == ACL_VERSION;
}

/* The entry of a tag, or NULL. */
static struct acl_entry *find(const void *value, size_t size, uint16_t tag)
{
	for (size_t i = 0; i < entries(size); i++)
		if (entry(value, i)->tag == tag)
			return entry(value, i);
	return NULL;
}

mode_t acl_mode(const void *value, size_t size, bool *equivalent)
{
	struct acl_entry *u = find(value, size, TAG_USER_OBJ), *g = find(value, size, TAG_GROUP_OBJ);
	struct acl_entry *m = find(value, size, TAG_MASK), *o = find(value, size, TAG_OTHER);
	mode_t mode = 0;

	*equivalent = !m && !find(value, size, TAG_USER) && !find(value, size, TAG_GROUP);
	if (u)
		mode |= (mode_t)(u->perm & 7) << 6;
	if (m)
		mode |= (mode_t)(m->perm & 7) << 3;
	else if (g)
		mode |= (mode_t)(g->perm & 7) << 3;
	if (o)
		mode |= o->perm & 7;
	return mode;
}

void acl_chmod(void *value, size_t size, mode_t mode)
{
	struct acl_entry *u = find(value, size, TAG_USER_OBJ), *g = find(value, size, TAG_GROUP_OBJ);
	struct acl_entry *m = find(value, size, TAG_MASK), *o = find(value, size, TAG_OTHER);

	if (u)
		u->perm = (uint16_t)((mode >> 6) & 7);
	if (m)
		m->perm = (uint16_t)((mode >> 3) & 7);
	else if (g)
		g->perm = (uint16_t)((mode >> 3) & 7);
	if (o)
		o->perm = (uint16_t)(mode & 7);
}

bool acl_create_masq(void *value, size_t size, mode_t *mode)
{
	struct acl_entry *g = NULL, *m = NULL;
	mode_t keep = *mode & ~(mode_t)0777;
	mode_t bits = *mode & 0777;
	bool extended = false;

	for (size_t i = 0; i < entries(size); i++) {
		struct acl_entry *e = entry(value, i);

		switch (e->tag) {
		case TAG_USER_OBJ:
			e->perm &= (uint16_t)((bits >> 6) & 7);
			bits &= (mode_t)(e->perm << 6) | ~(mode_t)S_IRWXU;
			break;
		case TAG_USER:
		case TAG_GROUP:
			extended = true;
			break;
		case TAG_GROUP_OBJ:
			g = e;
			break;
		case TAG_MASK:
			m = e;
			extended = true;
			break;
		case TAG_OTHER:
			e->perm &= (uint16_t)(bits & 7);
			bits &= (mode_t)e->perm | ~(mode_t)S_IRWXO;
			break;
		}
	}
	/* the mask, if any, limits the group class; else the owning group does */
	if (m) {
		m->perm &= (uint16_t)((bits >> 3) & 7);
		bits &= (mode_t)(m->perm << 3) | ~(mode_t)S_IRWXG;
	} else if (g) {
		g->perm &= (uint16_t)((bits >> 3) & 7);
		bits &= (mode_t)(g->perm << 3) | ~(mode_t)S_IRWXG;
	}
	*mode = keep | bits;
	return extended;
}
