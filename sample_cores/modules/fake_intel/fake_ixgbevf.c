// SPDX-License-Identifier: GPL-2.0
/*
 * fake_ixgbevf: real ixgbevf rings (the driver's own headers) on a platform
 * device whose driver is named "ixgbevf"; see fake_rx.h.
 * Route: net_device -> ixgbevf_adapter (netdev_priv) -> rx_ring[0..num_rx_queues).
 * ixgbevf keeps a frame in progress in ring->skb (not replayed).
 */
#include "ixgbevf.h"

#define FAKE_DRIVER "ixgbevf"
#define FAKE_ADAPTER struct ixgbevf_adapter
#define FAKE_RING struct ixgbevf_ring
#define FAKE_BUF struct ixgbevf_rx_buffer
#define FAKE_SLOTS rx_buffer_info
#define FAKE_QUEUE queue_index
#define fake_rx_pg_order(ring) ixgbevf_rx_pg_order(ring)
/* ring->state: an unsigned long, or a one-word bitmap */
#define fake_set_large(ring) set_bit(__IXGBEVF_RX_3K_BUFFER, (unsigned long *)&(ring)->state)
#include "fake_rx.h"

MODULE_DESCRIPTION("vmcore-tools test module: ixgbevf rx rings with planted page losses");
