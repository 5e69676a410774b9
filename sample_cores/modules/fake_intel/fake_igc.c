// SPDX-License-Identifier: GPL-2.0
/*
 * fake_igc: real igc rings (the driver's own headers) on a platform
 * device whose driver is named "igc"; see fake_rx.h.
 * Route: net_device -> igc_adapter (netdev_priv) -> rx_ring[0..num_rx_queues).
 * igc keeps a frame in progress in ring->skb (not replayed).
 */
#include "igc.h"

#define FAKE_DRIVER "igc"
#define FAKE_ADAPTER struct igc_adapter
#define FAKE_RING struct igc_ring
#define FAKE_BUF struct igc_rx_buffer
#define FAKE_SLOTS rx_buffer_info
#define FAKE_QUEUE queue_index
#define fake_rx_pg_order(ring) igc_rx_pg_order(ring)
#define fake_set_large(ring) set_bit(IGC_RING_FLAG_RX_3K_BUFFER, &(ring)->flags)
#include "fake_rx.h"

MODULE_DESCRIPTION("vmcore-tools test module: igc rx rings with planted page losses");
