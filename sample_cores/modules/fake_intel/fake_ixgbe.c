// SPDX-License-Identifier: GPL-2.0
/*
 * fake_ixgbe: real ixgbe rings (the driver's own headers) on a platform
 * device whose driver is named "ixgbe"; see fake_rx.h.
 * Route: net_device -> ixgbe_adapter (netdev_priv) -> rx_ring[0..num_rx_queues).
 * ixgbe keeps the skb of a frame in progress in the next slot's skb.
 */
#include "ixgbe.h"

#define FAKE_DRIVER "ixgbe"
#define FAKE_ADAPTER struct ixgbe_adapter
#define FAKE_RING struct ixgbe_ring
#define FAKE_BUF struct ixgbe_rx_buffer
#define FAKE_SLOTS rx_buffer_info
#define FAKE_QUEUE queue_index
#define FAKE_SLOT_SKB
#define fake_rx_pg_order(ring) ixgbe_rx_pg_order(ring)
/* ring->state: an unsigned long, a one-word bitmap from 6.18 */
#define fake_set_large(ring) set_bit(__IXGBE_RX_3K_BUFFER, (unsigned long *)&(ring)->state)
#include "fake_rx.h"

MODULE_DESCRIPTION("vmcore-tools test module: ixgbe rx rings with planted page losses");
