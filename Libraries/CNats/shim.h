#pragma once
#include <nats/nats.h>

// Not in cnats' public headers, but exported by libnats 3.x (3.4 through 3.9; its own tests use
// it): a filter the connection's reader thread runs on every message before handing it to a
// subscription's delivery thread. A filter that sets `*msg` to NULL has taken the message and
// destroys it.
typedef void (*natsMsgFilter)(natsConnection *nc, natsMsg **msg, void *closure);
void natsConn_setFilterWithClosure(natsConnection *nc, natsMsgFilter f, void *closure);
