"""sFlow generic interface counters: the side table of :mod:`.sflow` and its schema."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from flowhawk import schema
from flowhawk.collect.decode import sflow_walk as w

#: One row per generic interface counter record (sFlow counters_sample 0/2 or 0/4
#: holding a generic interface record 0/1). ``ts``: receive time of the datagram;
#: ``source_id_type`` / ``source_id``: the sample's data source (type 0 = ifIndex);
#: ``if_direction``: 0 unknown, 1 full, 2 half duplex, 3 in, 4 out; ``if_status``:
#: bit 0 admin up, bit 1 oper up; ``promiscuous``: 1 true, 2 false (SNMP TruthValue),
#: 0 unknown. Octet counters and speed are 64-bit unsigned, the others 32-bit counters
#: as sent (they wrap); deltas are the reader's business.
COUNTER_SCHEMA = pa.schema(
    [
        pa.field("ts", schema.TS, nullable=False),
        pa.field("agent", pa.string(), nullable=False),
        pa.field("sub_agent", pa.int64(), nullable=False),
        pa.field("uptime_ms", pa.int64(), nullable=False),
        pa.field("sequence", pa.int64(), nullable=False),
        pa.field("source_id_type", pa.int32(), nullable=False),
        pa.field("source_id", pa.int64(), nullable=False),
        pa.field("if_index", pa.int64(), nullable=False),
        pa.field("if_type", pa.int32(), nullable=False),
        pa.field("if_speed", pa.uint64(), nullable=False),
        pa.field("if_direction", pa.int32(), nullable=False),
        pa.field("if_status", pa.int32(), nullable=False),
        pa.field("in_octets", pa.uint64(), nullable=False),
        pa.field("in_ucast", pa.int64(), nullable=False),
        pa.field("in_mcast", pa.int64(), nullable=False),
        pa.field("in_bcast", pa.int64(), nullable=False),
        pa.field("in_discards", pa.int64(), nullable=False),
        pa.field("in_errors", pa.int64(), nullable=False),
        pa.field("in_unknown", pa.int64(), nullable=False),
        pa.field("out_octets", pa.uint64(), nullable=False),
        pa.field("out_ucast", pa.int64(), nullable=False),
        pa.field("out_mcast", pa.int64(), nullable=False),
        pa.field("out_bcast", pa.int64(), nullable=False),
        pa.field("out_discards", pa.int64(), nullable=False),
        pa.field("out_errors", pa.int64(), nullable=False),
        pa.field("promiscuous", pa.int32(), nullable=False),
    ]
)
_COUNTER_COLUMNS = {  # COUNTER_SCHEMA name -> kernel column, from if_index on
    "if_index": w.C_IFINDEX,
    "if_type": w.C_IFTYPE,
    "if_speed": w.C_SPEED,
    "if_direction": w.C_DIRECTION,
    "if_status": w.C_STATUS,
    "in_octets": w.C_IN_OCTETS,
    "in_ucast": w.C_IN_UCAST,
    "in_mcast": w.C_IN_MCAST,
    "in_bcast": w.C_IN_BCAST,
    "in_discards": w.C_IN_DISCARDS,
    "in_errors": w.C_IN_ERRORS,
    "in_unknown": w.C_IN_UNKNOWN,
    "out_octets": w.C_OUT_OCTETS,
    "out_ucast": w.C_OUT_UCAST,
    "out_mcast": w.C_OUT_MCAST,
    "out_bcast": w.C_OUT_BCAST,
    "out_discards": w.C_OUT_DISCARDS,
    "out_errors": w.C_OUT_ERRORS,
    "promiscuous": w.C_PROMISC,
}


def counters_table(
    ci: np.ndarray, di: np.ndarray, recv: np.ndarray, agents: list[str], agent_of: np.ndarray
) -> pa.Table:
    """The COUNTER_SCHEMA table of the generic interface counter rows."""
    d = ci[w.C_DG].astype(np.int64)
    cols: dict[str, pa.Array | np.ndarray] = {
        "ts": pa.array(recv[d], type=schema.TS),
        "agent": pa.array(agents, pa.string()).take(pa.array(agent_of[d])),
        "sub_agent": di[w.D_SUB, d],
        "uptime_ms": di[w.D_UPTIME, d],
        "sequence": ci[w.C_SEQ].astype(np.int64),
        "source_id_type": ci[w.C_STYPE].astype(np.int32),
        "source_id": ci[w.C_SIDX].astype(np.int64),
    }
    for name, col in _COUNTER_COLUMNS.items():
        cols[name] = ci[col].astype(COUNTER_SCHEMA.field(name).type.to_pandas_dtype())
    return pa.Table.from_pydict(cols, schema=COUNTER_SCHEMA)
