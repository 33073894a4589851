"""The Diameter dictionary: AVP types and flag rules, and command ABNF in brief.

Covers the base protocol (RFC 6733), Cx/Dx (TS 29.229), DCCA (RFC 4006), the
Digest AVPs Cx uses (RFC 4740/5090) and the TS 32.299 IMS charging AVPs
imsp2pd sends. :func:`default_dictionary` returns the shared immutable instance;
:meth:`Dictionary.extend` makes a new one with more definitions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from functools import cache

from imsp2pd.diameter.avp import (
    Avp,
    AvpType,
    CodecEntry,
    Value,
    codec_entry,
    default_vendor,
    keep_encoded,
)
from imsp2pd.diameter.codes import Application, AvpCode, Command, TgppAvp, Vendor


class MRule(Enum):
    """The M-bit rule of an AVP: MUST means we set it; MUST_NOT means a peer may not."""

    MUST = "must"
    MAY = "may"
    MUST_NOT = "must not"


@dataclass(frozen=True, slots=True)
class AvpDef:
    name: str
    code: int
    type: AvpType
    vendor: int = 0
    m_rule: MRule = MRule.MUST

    @property
    def may_be_mandatory(self) -> bool:
        return self.m_rule is not MRule.MUST_NOT

    @property
    def m_forbidden(self) -> bool:
        return self.m_rule is MRule.MUST_NOT


AvpKey = tuple[int, int]
#: The fast decoder's rows of recurring AVPs: bytes of the first -> (bytes, Avps) of rows.
_Runs = dict[bytes, list[tuple[bytes, tuple[Avp, ...]]]]


@dataclass(frozen=True, slots=True)
class CommandDef:
    """A command: which AVPs its request and answer must carry, and which only once."""

    name: str
    code: int
    application: int
    proxiable: bool
    request_required: tuple[AvpKey, ...] = ()
    answer_required: tuple[AvpKey, ...] = ()
    single: tuple[AvpKey, ...] = ()


T = AvpType
_G = T.GROUPED
_U32 = T.UNSIGNED32
_U64 = T.UNSIGNED64
_E = T.ENUMERATED
_S = T.UTF8_STRING
_O = T.OCTET_STRING
_ID = T.DIAMETER_IDENTITY

_BASE: tuple[tuple[str, int, AvpType, MRule], ...] = (
    ("User-Name", AvpCode.USER_NAME, _S, MRule.MUST),
    ("Framed-IP-Address", AvpCode.FRAMED_IP_ADDRESS, _O, MRule.MUST),
    ("Class", AvpCode.CLASS, _O, MRule.MUST),
    ("Session-Timeout", AvpCode.SESSION_TIMEOUT, _U32, MRule.MUST),
    ("Proxy-State", AvpCode.PROXY_STATE, _O, MRule.MUST),
    ("Accounting-Session-Id", AvpCode.ACCOUNTING_SESSION_ID, _O, MRule.MUST),
    ("Acct-Multi-Session-Id", AvpCode.ACCT_MULTI_SESSION_ID, _S, MRule.MUST),
    ("Event-Timestamp", AvpCode.EVENT_TIMESTAMP, T.TIME, MRule.MUST),
    ("Acct-Interim-Interval", AvpCode.ACCT_INTERIM_INTERVAL, _U32, MRule.MUST),
    ("Digest-Realm", AvpCode.DIGEST_REALM, _S, MRule.MUST),
    ("Digest-QoP", AvpCode.DIGEST_QOP, _S, MRule.MUST),
    ("Digest-Algorithm", AvpCode.DIGEST_ALGORITHM, _S, MRule.MUST),
    ("Digest-HA1", AvpCode.DIGEST_HA1, _S, MRule.MUST),
    ("Host-IP-Address", AvpCode.HOST_IP_ADDRESS, T.ADDRESS, MRule.MUST),
    ("Auth-Application-Id", AvpCode.AUTH_APPLICATION_ID, _U32, MRule.MUST),
    ("Acct-Application-Id", AvpCode.ACCT_APPLICATION_ID, _U32, MRule.MUST),
    ("Vendor-Specific-Application-Id", AvpCode.VENDOR_SPECIFIC_APPLICATION_ID, _G, MRule.MUST),
    ("Redirect-Host-Usage", AvpCode.REDIRECT_HOST_USAGE, _E, MRule.MUST),
    ("Redirect-Max-Cache-Time", AvpCode.REDIRECT_MAX_CACHE_TIME, _U32, MRule.MUST),
    ("Session-Id", AvpCode.SESSION_ID, _S, MRule.MUST),
    ("Origin-Host", AvpCode.ORIGIN_HOST, _ID, MRule.MUST),
    ("Supported-Vendor-Id", AvpCode.SUPPORTED_VENDOR_ID, _U32, MRule.MUST),
    ("Vendor-Id", AvpCode.VENDOR_ID, _U32, MRule.MUST),
    ("Firmware-Revision", AvpCode.FIRMWARE_REVISION, _U32, MRule.MUST_NOT),
    ("Result-Code", AvpCode.RESULT_CODE, _U32, MRule.MUST),
    ("Product-Name", AvpCode.PRODUCT_NAME, _S, MRule.MUST_NOT),
    ("Session-Binding", AvpCode.SESSION_BINDING, _U32, MRule.MUST),
    ("Session-Server-Failover", AvpCode.SESSION_SERVER_FAILOVER, _E, MRule.MUST),
    ("Multi-Round-Time-Out", AvpCode.MULTI_ROUND_TIME_OUT, _U32, MRule.MUST),
    ("Disconnect-Cause", AvpCode.DISCONNECT_CAUSE, _E, MRule.MUST),
    ("Auth-Request-Type", AvpCode.AUTH_REQUEST_TYPE, _E, MRule.MUST),
    ("Auth-Grace-Period", AvpCode.AUTH_GRACE_PERIOD, _U32, MRule.MUST),
    ("Auth-Session-State", AvpCode.AUTH_SESSION_STATE, _E, MRule.MUST),
    ("Origin-State-Id", AvpCode.ORIGIN_STATE_ID, _U32, MRule.MUST),
    ("Failed-AVP", AvpCode.FAILED_AVP, _G, MRule.MUST),
    ("Proxy-Host", AvpCode.PROXY_HOST, _ID, MRule.MUST),
    ("Error-Message", AvpCode.ERROR_MESSAGE, _S, MRule.MUST_NOT),
    ("Route-Record", AvpCode.ROUTE_RECORD, _ID, MRule.MUST),
    ("Destination-Realm", AvpCode.DESTINATION_REALM, _ID, MRule.MUST),
    ("Proxy-Info", AvpCode.PROXY_INFO, _G, MRule.MUST),
    ("Re-Auth-Request-Type", AvpCode.RE_AUTH_REQUEST_TYPE, _E, MRule.MUST),
    ("Accounting-Sub-Session-Id", AvpCode.ACCOUNTING_SUB_SESSION_ID, _U64, MRule.MUST),
    ("Authorization-Lifetime", AvpCode.AUTHORIZATION_LIFETIME, _U32, MRule.MUST),
    ("Redirect-Host", AvpCode.REDIRECT_HOST, T.DIAMETER_URI, MRule.MUST),
    ("Destination-Host", AvpCode.DESTINATION_HOST, _ID, MRule.MUST),
    ("Error-Reporting-Host", AvpCode.ERROR_REPORTING_HOST, _ID, MRule.MUST_NOT),
    ("Termination-Cause", AvpCode.TERMINATION_CAUSE, _E, MRule.MUST),
    ("Origin-Realm", AvpCode.ORIGIN_REALM, _ID, MRule.MUST),
    ("Experimental-Result", AvpCode.EXPERIMENTAL_RESULT, _G, MRule.MUST),
    ("Experimental-Result-Code", AvpCode.EXPERIMENTAL_RESULT_CODE, _U32, MRule.MUST),
    ("Inband-Security-Id", AvpCode.INBAND_SECURITY_ID, _U32, MRule.MUST),
    ("Accounting-Record-Type", AvpCode.ACCOUNTING_RECORD_TYPE, _E, MRule.MUST),
    ("Accounting-Realtime-Required", AvpCode.ACCOUNTING_REALTIME_REQUIRED, _E, MRule.MUST),
    ("Accounting-Record-Number", AvpCode.ACCOUNTING_RECORD_NUMBER, _U32, MRule.MUST),
    # RFC 4006
    ("CC-Correlation-Id", AvpCode.CC_CORRELATION_ID, _O, MRule.MAY),
    ("CC-Input-Octets", AvpCode.CC_INPUT_OCTETS, _U64, MRule.MUST),
    ("CC-Money", AvpCode.CC_MONEY, _G, MRule.MUST),
    ("CC-Output-Octets", AvpCode.CC_OUTPUT_OCTETS, _U64, MRule.MUST),
    ("CC-Request-Number", AvpCode.CC_REQUEST_NUMBER, _U32, MRule.MUST),
    ("CC-Request-Type", AvpCode.CC_REQUEST_TYPE, _E, MRule.MUST),
    ("CC-Service-Specific-Units", AvpCode.CC_SERVICE_SPECIFIC_UNITS, _U64, MRule.MUST),
    ("CC-Session-Failover", AvpCode.CC_SESSION_FAILOVER, _E, MRule.MUST),
    ("CC-Sub-Session-Id", AvpCode.CC_SUB_SESSION_ID, _U64, MRule.MUST),
    ("CC-Time", AvpCode.CC_TIME, _U32, MRule.MUST),
    ("CC-Total-Octets", AvpCode.CC_TOTAL_OCTETS, _U64, MRule.MUST),
    ("Check-Balance-Result", AvpCode.CHECK_BALANCE_RESULT, _E, MRule.MUST),
    ("Cost-Information", AvpCode.COST_INFORMATION, _G, MRule.MUST),
    ("Cost-Unit", AvpCode.COST_UNIT, _S, MRule.MUST),
    ("Currency-Code", AvpCode.CURRENCY_CODE, _U32, MRule.MUST),
    ("Credit-Control", AvpCode.CREDIT_CONTROL, _E, MRule.MUST),
    ("Credit-Control-Failure-Handling", AvpCode.CREDIT_CONTROL_FAILURE_HANDLING, _E, MRule.MUST),
    ("Direct-Debiting-Failure-Handling", AvpCode.DIRECT_DEBITING_FAILURE_HANDLING, _E, MRule.MUST),
    ("Exponent", AvpCode.EXPONENT, T.INTEGER32, MRule.MUST),
    ("Final-Unit-Indication", AvpCode.FINAL_UNIT_INDICATION, _G, MRule.MUST),
    ("Granted-Service-Unit", AvpCode.GRANTED_SERVICE_UNIT, _G, MRule.MUST),
    ("Rating-Group", AvpCode.RATING_GROUP, _U32, MRule.MUST),
    ("Requested-Action", AvpCode.REQUESTED_ACTION, _E, MRule.MUST),
    ("Requested-Service-Unit", AvpCode.REQUESTED_SERVICE_UNIT, _G, MRule.MUST),
    ("Service-Identifier", AvpCode.SERVICE_IDENTIFIER, _U32, MRule.MUST),
    ("Subscription-Id", AvpCode.SUBSCRIPTION_ID, _G, MRule.MUST),
    ("Subscription-Id-Data", AvpCode.SUBSCRIPTION_ID_DATA, _S, MRule.MUST),
    ("Unit-Value", AvpCode.UNIT_VALUE, _G, MRule.MUST),
    ("Used-Service-Unit", AvpCode.USED_SERVICE_UNIT, _G, MRule.MUST),
    ("Value-Digits", AvpCode.VALUE_DIGITS, T.INTEGER64, MRule.MUST),
    ("Validity-Time", AvpCode.VALIDITY_TIME, _U32, MRule.MUST),
    ("Final-Unit-Action", AvpCode.FINAL_UNIT_ACTION, _E, MRule.MUST),
    ("Subscription-Id-Type", AvpCode.SUBSCRIPTION_ID_TYPE, _E, MRule.MUST),
    ("CC-Unit-Type", AvpCode.CC_UNIT_TYPE, _E, MRule.MUST),
    ("Multiple-Services-Indicator", AvpCode.MULTIPLE_SERVICES_INDICATOR, _E, MRule.MUST),
    ("Multiple-Services-Credit-Control", AvpCode.MULTIPLE_SERVICES_CREDIT_CONTROL, _G, MRule.MUST),
    ("User-Equipment-Info", AvpCode.USER_EQUIPMENT_INFO, _G, MRule.MAY),
    ("User-Equipment-Info-Type", AvpCode.USER_EQUIPMENT_INFO_TYPE, _E, MRule.MAY),
    ("User-Equipment-Info-Value", AvpCode.USER_EQUIPMENT_INFO_VALUE, _O, MRule.MAY),
    ("Service-Context-Id", AvpCode.SERVICE_CONTEXT_ID, _S, MRule.MUST),
)

_TGPP: tuple[tuple[str, int, AvpType, MRule], ...] = (
    ("Visited-Network-Identifier", TgppAvp.VISITED_NETWORK_IDENTIFIER, _O, MRule.MUST),
    ("Public-Identity", TgppAvp.PUBLIC_IDENTITY, _S, MRule.MUST),
    ("Server-Name", TgppAvp.SERVER_NAME, _S, MRule.MUST),
    ("Server-Capabilities", TgppAvp.SERVER_CAPABILITIES, _G, MRule.MUST),
    ("Mandatory-Capability", TgppAvp.MANDATORY_CAPABILITY, _U32, MRule.MUST),
    ("Optional-Capability", TgppAvp.OPTIONAL_CAPABILITY, _U32, MRule.MUST),
    ("User-Data", TgppAvp.USER_DATA, _O, MRule.MUST),
    ("SIP-Number-Auth-Items", TgppAvp.SIP_NUMBER_AUTH_ITEMS, _U32, MRule.MUST),
    ("SIP-Authentication-Scheme", TgppAvp.SIP_AUTHENTICATION_SCHEME, _S, MRule.MUST),
    ("SIP-Authenticate", TgppAvp.SIP_AUTHENTICATE, _O, MRule.MUST),
    ("SIP-Authorization", TgppAvp.SIP_AUTHORIZATION, _O, MRule.MUST),
    ("SIP-Authentication-Context", TgppAvp.SIP_AUTHENTICATION_CONTEXT, _O, MRule.MUST),
    ("SIP-Auth-Data-Item", TgppAvp.SIP_AUTH_DATA_ITEM, _G, MRule.MUST),
    ("SIP-Item-Number", TgppAvp.SIP_ITEM_NUMBER, _U32, MRule.MUST),
    ("Server-Assignment-Type", TgppAvp.SERVER_ASSIGNMENT_TYPE, _E, MRule.MUST),
    ("Deregistration-Reason", TgppAvp.DEREGISTRATION_REASON, _G, MRule.MUST),
    ("Reason-Code", TgppAvp.REASON_CODE, _E, MRule.MUST),
    ("Reason-Info", TgppAvp.REASON_INFO, _S, MRule.MUST),
    ("Charging-Information", TgppAvp.CHARGING_INFORMATION, _G, MRule.MUST),
    (
        "Primary-Event-Charging-Function-Name",
        TgppAvp.PRIMARY_EVENT_CHARGING_FUNCTION_NAME,
        T.DIAMETER_URI,
        MRule.MUST,
    ),
    (
        "Secondary-Event-Charging-Function-Name",
        TgppAvp.SECONDARY_EVENT_CHARGING_FUNCTION_NAME,
        T.DIAMETER_URI,
        MRule.MUST,
    ),
    (
        "Primary-Charging-Collection-Function-Name",
        TgppAvp.PRIMARY_CHARGING_COLLECTION_FUNCTION_NAME,
        T.DIAMETER_URI,
        MRule.MUST,
    ),
    (
        "Secondary-Charging-Collection-Function-Name",
        TgppAvp.SECONDARY_CHARGING_COLLECTION_FUNCTION_NAME,
        T.DIAMETER_URI,
        MRule.MUST,
    ),
    ("User-Authorization-Type", TgppAvp.USER_AUTHORIZATION_TYPE, _E, MRule.MUST),
    ("User-Data-Already-Available", TgppAvp.USER_DATA_ALREADY_AVAILABLE, _E, MRule.MUST),
    ("Confidentiality-Key", TgppAvp.CONFIDENTIALITY_KEY, _O, MRule.MUST),
    ("Integrity-Key", TgppAvp.INTEGRITY_KEY, _O, MRule.MUST),
    ("Supported-Features", TgppAvp.SUPPORTED_FEATURES, _G, MRule.MAY),
    ("Feature-List-ID", TgppAvp.FEATURE_LIST_ID, _U32, MRule.MAY),
    ("Feature-List", TgppAvp.FEATURE_LIST, _U32, MRule.MAY),
    ("Supported-Applications", TgppAvp.SUPPORTED_APPLICATIONS, _G, MRule.MUST),
    ("Associated-Identities", TgppAvp.ASSOCIATED_IDENTITIES, _G, MRule.MAY),
    ("Originating-Request", TgppAvp.ORIGINATING_REQUEST, _E, MRule.MUST),
    ("Wildcarded-Public-Identity", TgppAvp.WILDCARDED_PUBLIC_IDENTITY, _S, MRule.MAY),
    ("SIP-Digest-Authenticate", TgppAvp.SIP_DIGEST_AUTHENTICATE, _G, MRule.MAY),
    ("Wildcarded-IMPU", TgppAvp.WILDCARDED_IMPU, _S, MRule.MAY),
    ("UAR-Flags", TgppAvp.UAR_FLAGS, _U32, MRule.MAY),
    ("Loose-Route-Indication", TgppAvp.LOOSE_ROUTE_INDICATION, _E, MRule.MAY),
    ("Path", TgppAvp.PATH, _O, MRule.MAY),
    ("Contact", TgppAvp.CONTACT, _O, MRule.MAY),
    ("Associated-Registered-Identities", TgppAvp.ASSOCIATED_REGISTERED_IDENTITIES, _G, MRule.MAY),
    ("Multiple-Registration-Indication", TgppAvp.MULTIPLE_REGISTRATION_INDICATION, _E, MRule.MAY),
    ("Session-Priority", TgppAvp.SESSION_PRIORITY, _E, MRule.MAY),
    ("LIA-Flags", TgppAvp.LIA_FLAGS, _U32, MRule.MAY),
    ("SAR-Flags", TgppAvp.SAR_FLAGS, _U32, MRule.MAY),
    # TS 32.299
    ("Event-Type", TgppAvp.EVENT_TYPE, _G, MRule.MUST),
    ("SIP-Method", TgppAvp.SIP_METHOD, _S, MRule.MUST),
    ("Event", TgppAvp.EVENT, _S, MRule.MUST),
    ("Content-Type", TgppAvp.CONTENT_TYPE, _S, MRule.MUST),
    ("Content-Length", TgppAvp.CONTENT_LENGTH, _U32, MRule.MUST),
    ("Role-Of-Node", TgppAvp.ROLE_OF_NODE, _E, MRule.MUST),
    ("User-Session-Id", TgppAvp.USER_SESSION_ID, _S, MRule.MUST),
    ("Calling-Party-Address", TgppAvp.CALLING_PARTY_ADDRESS, _S, MRule.MUST),
    ("Called-Party-Address", TgppAvp.CALLED_PARTY_ADDRESS, _S, MRule.MUST),
    ("Time-Stamps", TgppAvp.TIME_STAMPS, _G, MRule.MUST),
    ("SIP-Request-Timestamp", TgppAvp.SIP_REQUEST_TIMESTAMP, T.TIME, MRule.MUST),
    ("SIP-Response-Timestamp", TgppAvp.SIP_RESPONSE_TIMESTAMP, T.TIME, MRule.MUST),
    ("Application-Server", TgppAvp.APPLICATION_SERVER, _S, MRule.MUST),
    ("Inter-Operator-Identifier", TgppAvp.INTER_OPERATOR_IDENTIFIER, _G, MRule.MUST),
    ("Originating-IOI", TgppAvp.ORIGINATING_IOI, _S, MRule.MUST),
    ("Terminating-IOI", TgppAvp.TERMINATING_IOI, _S, MRule.MUST),
    ("IMS-Charging-Identifier", TgppAvp.IMS_CHARGING_IDENTIFIER, _S, MRule.MUST),
    ("Application-Server-Information", TgppAvp.APPLICATION_SERVER_INFORMATION, _G, MRule.MUST),
    ("Service-Id", TgppAvp.SERVICE_ID, _S, MRule.MUST),
    ("Node-Functionality", TgppAvp.NODE_FUNCTIONALITY, _E, MRule.MUST),
    ("Service-Specific-Data", TgppAvp.SERVICE_SPECIFIC_DATA, _S, MRule.MUST),
    ("Service-Information", TgppAvp.SERVICE_INFORMATION, _G, MRule.MUST),
    ("IMS-Information", TgppAvp.IMS_INFORMATION, _G, MRule.MUST),
    ("Service-Specific-Info", TgppAvp.SERVICE_SPECIFIC_INFO, _G, MRule.MAY),
    ("Requested-Party-Address", TgppAvp.REQUESTED_PARTY_ADDRESS, _S, MRule.MUST),
    ("Service-Specific-Type", TgppAvp.SERVICE_SPECIFIC_TYPE, _U32, MRule.MAY),
)


def _k(code: int) -> AvpKey:
    return (int(code), int(default_vendor(code)))


A = AvpCode
X = TgppAvp
_CX_COMMON = (_k(A.SESSION_ID), _k(A.AUTH_SESSION_STATE), _k(A.ORIGIN_HOST), _k(A.ORIGIN_REALM))
_CX_SINGLE = (
    _k(A.SESSION_ID),
    _k(A.ORIGIN_HOST),
    _k(A.ORIGIN_REALM),
    _k(A.DESTINATION_HOST),
    _k(A.DESTINATION_REALM),
    _k(A.AUTH_SESSION_STATE),
    _k(A.RESULT_CODE),
    _k(A.USER_NAME),
)
_CX_ANSWER = (_k(A.SESSION_ID), _k(A.AUTH_SESSION_STATE), _k(A.ORIGIN_HOST), _k(A.ORIGIN_REALM))


def _cx(name: str, code: Command, *required: int) -> CommandDef:
    return CommandDef(
        name,
        code,
        Application.CX,
        True,
        _CX_COMMON + (_k(A.VENDOR_SPECIFIC_APPLICATION_ID),) + tuple(_k(c) for c in required),
        _CX_ANSWER,
        _CX_SINGLE,
    )


_COMMANDS = (
    CommandDef(
        "Capabilities-Exchange",
        Command.CAPABILITIES_EXCHANGE,
        Application.COMMON,
        False,
        tuple(
            _k(c)
            for c in (
                A.ORIGIN_HOST,
                A.ORIGIN_REALM,
                A.HOST_IP_ADDRESS,
                A.VENDOR_ID,
                A.PRODUCT_NAME,
            )
        ),
        tuple(_k(c) for c in (A.RESULT_CODE, A.ORIGIN_HOST, A.ORIGIN_REALM)),
        tuple(_k(c) for c in (A.ORIGIN_HOST, A.ORIGIN_REALM, A.RESULT_CODE, A.VENDOR_ID)),
    ),
    CommandDef(
        "Device-Watchdog",
        Command.DEVICE_WATCHDOG,
        Application.COMMON,
        False,
        (_k(A.ORIGIN_HOST), _k(A.ORIGIN_REALM)),
        (_k(A.RESULT_CODE), _k(A.ORIGIN_HOST), _k(A.ORIGIN_REALM)),
        (_k(A.ORIGIN_HOST), _k(A.ORIGIN_REALM), _k(A.RESULT_CODE)),
    ),
    CommandDef(
        "Disconnect-Peer",
        Command.DISCONNECT_PEER,
        Application.COMMON,
        False,
        (_k(A.ORIGIN_HOST), _k(A.ORIGIN_REALM), _k(A.DISCONNECT_CAUSE)),
        (_k(A.RESULT_CODE), _k(A.ORIGIN_HOST), _k(A.ORIGIN_REALM)),
        (_k(A.ORIGIN_HOST), _k(A.ORIGIN_REALM), _k(A.RESULT_CODE), _k(A.DISCONNECT_CAUSE)),
    ),
    CommandDef(
        "Credit-Control",
        Command.CREDIT_CONTROL,
        Application.CREDIT_CONTROL,
        True,
        tuple(
            _k(c)
            for c in (
                A.SESSION_ID,
                A.ORIGIN_HOST,
                A.ORIGIN_REALM,
                A.DESTINATION_REALM,
                A.AUTH_APPLICATION_ID,
                A.SERVICE_CONTEXT_ID,
                A.CC_REQUEST_TYPE,
                A.CC_REQUEST_NUMBER,
            )
        ),
        tuple(
            _k(c)
            for c in (
                A.SESSION_ID,
                A.RESULT_CODE,
                A.ORIGIN_HOST,
                A.ORIGIN_REALM,
                A.AUTH_APPLICATION_ID,
                A.CC_REQUEST_TYPE,
                A.CC_REQUEST_NUMBER,
            )
        ),
        tuple(
            _k(c)
            for c in (
                A.SESSION_ID,
                A.ORIGIN_HOST,
                A.ORIGIN_REALM,
                A.DESTINATION_REALM,
                A.DESTINATION_HOST,
                A.AUTH_APPLICATION_ID,
                A.SERVICE_CONTEXT_ID,
                A.CC_REQUEST_TYPE,
                A.CC_REQUEST_NUMBER,
                A.REQUESTED_ACTION,
                A.RESULT_CODE,
            )
        ),
    ),
    _cx(
        "User-Authorization",
        Command.USER_AUTHORIZATION,
        A.DESTINATION_REALM,
        A.USER_NAME,
        X.PUBLIC_IDENTITY,
        X.VISITED_NETWORK_IDENTIFIER,
    ),
    _cx(
        "Server-Assignment",
        Command.SERVER_ASSIGNMENT,
        A.DESTINATION_REALM,
        X.SERVER_NAME,
        X.SERVER_ASSIGNMENT_TYPE,
        X.USER_DATA_ALREADY_AVAILABLE,
    ),
    _cx("Location-Info", Command.LOCATION_INFO, A.DESTINATION_REALM, X.PUBLIC_IDENTITY),
    _cx(
        "Multimedia-Auth",
        Command.MULTIMEDIA_AUTH,
        A.DESTINATION_REALM,
        A.USER_NAME,
        X.PUBLIC_IDENTITY,
        X.SIP_AUTH_DATA_ITEM,
        X.SIP_NUMBER_AUTH_ITEMS,
        X.SERVER_NAME,
    ),
    _cx(
        "Registration-Termination",
        Command.REGISTRATION_TERMINATION,
        A.DESTINATION_HOST,
        A.DESTINATION_REALM,
        A.USER_NAME,
        X.DEREGISTRATION_REASON,
    ),
    _cx(
        "Push-Profile",
        Command.PUSH_PROFILE,
        A.DESTINATION_HOST,
        A.DESTINATION_REALM,
        A.USER_NAME,
    ),
)


#: AVPs with few distinct values, seen in message after message: the decoder
#: keeps them by their bytes (identities and realms of peers, application
#: ids, result codes, Cx enumerations and S-CSCF names and capabilities).
RECURRING: frozenset[AvpKey] = frozenset(
    (int(c), int(default_vendor(c)))
    for c in (
        AvpCode.ORIGIN_HOST,
        AvpCode.ORIGIN_REALM,
        AvpCode.DESTINATION_HOST,
        AvpCode.DESTINATION_REALM,
        AvpCode.VENDOR_SPECIFIC_APPLICATION_ID,
        AvpCode.AUTH_APPLICATION_ID,
        AvpCode.ACCT_APPLICATION_ID,
        AvpCode.VENDOR_ID,
        AvpCode.AUTH_SESSION_STATE,
        AvpCode.RESULT_CODE,
        AvpCode.EXPERIMENTAL_RESULT,
        AvpCode.ORIGIN_STATE_ID,
        AvpCode.DIGEST_REALM,
        AvpCode.DIGEST_ALGORITHM,
        AvpCode.DIGEST_QOP,
        TgppAvp.VISITED_NETWORK_IDENTIFIER,
        TgppAvp.SERVER_NAME,
        TgppAvp.SERVER_CAPABILITIES,
        TgppAvp.SERVER_ASSIGNMENT_TYPE,
        TgppAvp.USER_DATA_ALREADY_AVAILABLE,
        TgppAvp.USER_AUTHORIZATION_TYPE,
        TgppAvp.SIP_NUMBER_AUTH_ITEMS,
        TgppAvp.SIP_ITEM_NUMBER,
        TgppAvp.SIP_AUTHENTICATION_SCHEME,
    )
)


class Dictionary:
    """AVP and command definitions, indexed by (code, vendor) and by name."""

    def __init__(self, avps: Iterable[AvpDef], commands: Iterable[CommandDef] = ()) -> None:
        self._avps: dict[AvpKey, AvpDef] = {}
        self._names: dict[str, AvpDef] = {}
        for d in avps:
            self._avps[(d.code, d.vendor)] = d
            self._names[d.name.lower()] = d
        self._commands: dict[int, CommandDef] = {c.code: c for c in commands}
        self._made: dict[tuple[type, int], tuple[int, AvpType, int | None, bool]] = {}
        self._constants: dict[tuple[type, int, type, str | int | bytes], Avp] = {}
        self._codec = {
            key: codec_entry(d.type, d.m_forbidden, key in RECURRING)
            for key, d in self._avps.items()
        }
        self._memos: tuple[dict[bytes, Avp], dict[bytes, Avp]] = ({}, {})
        self._runs: tuple[_Runs, _Runs] = ({}, {})

    def decode_memo(self, strict: bool) -> dict[bytes, Avp]:
        """The decoder's recurring AVPs, by their bytes, for requests (strict) or answers."""
        return self._memos[strict]

    def decode_runs(self, strict: bool) -> _Runs:
        """The decoder's runs of recurring AVPs (see :func:`~imsp2pd.diameter.avp._decode_fast`)."""
        return self._runs[strict]

    @property
    def codec_table(self) -> Mapping[AvpKey, CodecEntry]:
        """(code, vendor) -> how the fast decoder reads the AVP (see :func:`codec_entry`)."""
        return self._codec

    @property
    def definitions(self) -> Mapping[AvpKey, AvpDef]:
        """Every AVP definition by (code, vendor) (read-only; the codec's hot path)."""
        return self._avps

    def extend(
        self, avps: Iterable[AvpDef] = (), commands: Iterable[CommandDef] = ()
    ) -> Dictionary:
        return Dictionary([*self._avps.values(), *avps], [*self._commands.values(), *commands])

    def avp_def(self, code: int, vendor: int = 0) -> AvpDef | None:
        return self._avps.get((code, vendor))

    def command(self, code: int) -> CommandDef | None:
        return self._commands.get(code)

    def lookup(self, avp: str | int) -> AvpDef:
        """The definition of an AVP named by name or by an AvpCode/TgppAvp member."""
        if isinstance(avp, str):
            found = self._names.get(avp.lower())
        else:
            found = self._avps.get((int(avp), int(default_vendor(avp))))
        if found is None:
            raise KeyError(f"no AVP {avp!r} in the dictionary")
        return found

    def make(self, avp: str | int, value: Value, *, mandatory: bool | None = None) -> Avp:
        """An AVP with the type, vendor and M bit the dictionary gives it."""
        if isinstance(avp, str):
            d = self.lookup(avp)
        else:
            # memoised, as the arguments of the Avp: make() runs for every AVP we send
            made = self._made.get((type(avp), int(avp)))
            if made is None:
                made = self._made_args(avp)
            code, kind, vendor, must = made
            return Avp(code, value, kind, vendor, must if mandatory is None else mandatory)
        if mandatory is None:
            mandatory = d.m_rule is MRule.MUST
        return Avp(d.code, value, d.type, d.vendor if d.vendor else None, mandatory)

    def _made_args(self, avp: int) -> tuple[int, AvpType, int | None, bool]:
        d = self.lookup(avp)
        made = (d.code, d.type, d.vendor if d.vendor else None, d.m_rule is MRule.MUST)
        return self._made.setdefault((type(avp), int(avp)), made)

    def constant(self, avp: int, value: str | int | bytes) -> Avp:
        """:meth:`make` for a value that recurs (an identity, a realm, a result code).

        The AVP is made once and kept (a few thousand at most), so the
        messages built per request share it. Not for values that change with
        each request, such as a Session-Id.
        """
        key = (type(avp), int(avp), type(value), value)
        found = self._constants.get(key)
        if found is None:
            if len(self._constants) >= 4096:
                self._constants.clear()
            found = self._constants[key] = keep_encoded(self.make(avp, value))
        return found

    def group(self, avp: str | int, *children: Avp) -> Avp:
        return self.make(avp, tuple(children))

    def name_of(self, code: int, vendor: int = 0) -> str:
        d = self._avps.get((code, vendor))
        return d.name if d is not None else f"AVP {code}/{vendor}"


@cache
def default_dictionary() -> Dictionary:
    """The dictionary imsp2pd speaks (immutable; shared)."""
    avps = [AvpDef(n, int(c), t, 0, r) for n, c, t, r in _BASE]
    avps += [AvpDef(n, int(c), t, int(Vendor.TGPP), r) for n, c, t, r in _TGPP]
    return Dictionary(avps, _COMMANDS)
