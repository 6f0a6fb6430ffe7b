"""Detectors: the explicit registry of every method flowhawk runs.

Each detector is one class in its own module (see :mod:`flowhawk.detectors.base`
for the contract). Adding a method means adding it to :data:`DETECTORS`; names are
the PRODUCT.md method ids and must be unique.
"""

from __future__ import annotations

from flowhawk.detectors.base import Detector
from flowhawk.detectors.beacon import BEACON_DETECTORS
from flowhawk.detectors.clusters import CLUSTER_DETECTORS
from flowhawk.detectors.devices import NewExternalDevice, NewInternalDevice
from flowhawk.detectors.dga import DgaDomains
from flowhawk.detectors.dns_tunnel import DnsTunnel
from flowhawk.detectors.exfil import ExfiltrationHoarding
from flowhawk.detectors.intel import IntelligenceHit
from flowhawk.detectors.lateral import LateralMovement
from flowhawk.detectors.longconn import LongConnection
from flowhawk.detectors.newcomm import NewCommunication
from flowhawk.detectors.northsouth import HighRiskAnomalous, HighRiskNormal
from flowhawk.detectors.scan import Scan
from flowhawk.detectors.targeted import TargetedOrRandom
from flowhawk.detectors.tor import Tor
from flowhawk.detectors.volume import VOLUME_DETECTORS
from flowhawk.registry import Registry

DETECTORS: Registry[type[Detector]] = Registry(
    "detector",
    [
        (cls.method, cls)
        for cls in (
            NewCommunication,
            *VOLUME_DETECTORS,
            *CLUSTER_DETECTORS,
            Tor,
            IntelligenceHit,
            HighRiskAnomalous,
            HighRiskNormal,
            NewInternalDevice,
            NewExternalDevice,
            DnsTunnel,
            DgaDomains,
            *BEACON_DETECTORS,
            TargetedOrRandom,
            ExfiltrationHoarding,
            LateralMovement,
            Scan,
            LongConnection,
        )
    ],
)
