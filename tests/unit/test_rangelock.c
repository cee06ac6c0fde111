/* Unit tests of the asynchronous range lock. */
#include <string.h>

#include "check.h"
#include "rangelock.h"

static int granted[16];
static int order[16], norder;

static void on_grant(struct rl_entry *e);

static struct rl_entry ents[16];

static void on_grant(struct rl_entry *e)
{
	int i = (int)(e - ents);

	granted[i] = 1;
	order[norder++] = i;
}

static struct rl_entry *ent(int i, uint64_t s, uint64_t e)
{
	ents[i] = (struct rl_entry){ .start = s, .end = e, .grant = on_grant };
	return &ents[i];
}

static void test_disjoint_ranges_are_granted_at_once(void)
{
	struct rangelock rl;

	rangelock_init(&rl);
	CHECK(rangelock_acquire(&rl, ent(0, 0, 4096)));
	CHECK(rangelock_acquire(&rl, ent(1, 4096, 8192)));
	CHECK(rangelock_acquire(&rl, ent(2, 100000, 100001)));
	rangelock_release(&rl, &ents[1]);
	rangelock_release(&rl, &ents[0]);
	rangelock_release(&rl, &ents[2]);
	CHECK(rl.held == NULL);
	rangelock_destroy(&rl);
}

static void test_overlaps_wait_in_order(void)
{
	struct rangelock rl;

	memset(granted, 0, sizeof(granted));
	norder = 0;
	rangelock_init(&rl);
	CHECK(rangelock_acquire(&rl, ent(0, 0, 8192)));
	CHECK(!rangelock_acquire(&rl, ent(1, 4096, 12288)));   /* overlaps 0 */
	CHECK(!rangelock_acquire(&rl, ent(2, 8192, 16384)));   /* overlaps waiting 1 */
	CHECK(rangelock_acquire(&rl, ent(3, 65536, 69632)));   /* overlaps nothing */
	CHECK(!rangelock_acquire(&rl, ent(4, 0, 4096)));       /* overlaps 0 */
	rangelock_release(&rl, &ents[0]);
	/* 1 and 4 are granted (4 does not overlap 1); 2 still waits for 1 */
	CHECK(granted[1] && granted[4] && !granted[2]);
	CHECK_EQ(norder, 2);
	CHECK_EQ(order[0], 1);
	CHECK_EQ(order[1], 4);
	rangelock_release(&rl, &ents[1]);
	CHECK(granted[2]);
	rangelock_release(&rl, &ents[2]);
	rangelock_release(&rl, &ents[3]);
	rangelock_release(&rl, &ents[4]);
	CHECK(rl.held == NULL && rl.wait_head == NULL);
	rangelock_destroy(&rl);
}

static void test_a_later_request_does_not_overtake(void)
{
	struct rangelock rl;

	memset(granted, 0, sizeof(granted));
	norder = 0;
	rangelock_init(&rl);
	CHECK(rangelock_acquire(&rl, ent(0, 0, 4096)));
	CHECK(!rangelock_acquire(&rl, ent(1, 0, 8192)));
	/* 2 overlaps only the waiting 1: it must queue behind it */
	CHECK(!rangelock_acquire(&rl, ent(2, 4096, 8192)));
	rangelock_release(&rl, &ents[0]);
	CHECK(granted[1] && !granted[2]);
	rangelock_release(&rl, &ents[1]);
	CHECK(granted[2]);
	rangelock_release(&rl, &ents[2]);
	rangelock_destroy(&rl);
}

int main(void)
{
	RUN(test_disjoint_ranges_are_granted_at_once);
	RUN(test_overlaps_wait_in_order);
	RUN(test_a_later_request_does_not_overtake);
	printf("%d checks passed\n", checks_run);
	return 0;
}
