#pragma once
#include <nats/nats.h>

// Not in cnats' public headers, but exported by libnats 3.x (its own tests use it): a filter the
// connection's reader thread runs on every message before handing it to a subscription's
// delivery thread. A filter that sets `*msg` to NULL has taken the message and destroys it.
//
// Checked against libnats 3.4.1, the version Debian 12 ships and the stack installs: the filter
// runs with no lock held, only for a message of a live subscription, and never after the
// connection's closed callback. From 3.7 on it runs before the subscription is looked up, so a
// connection the reader thread closes itself could call it after that callback: check again
// before moving to a newer libnats.
typedef void (*natsMsgFilter)(natsConnection *nc, natsMsg **msg, void *closure);
void natsConn_setFilterWithClosure(natsConnection *nc, natsMsgFilter f, void *closure);
