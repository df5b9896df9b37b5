// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";

/// @title QbusAnchor: Merkle roots of verified quantum results, and run requests.
/// @notice (a) The verifier role anchors the Merkle root of a batch of result hashes.
///         (b) Anyone requests a run: an OpenQASM program, or its keccak256 and a URI.
///         (c) The verifier role fulfils a request once, with the result hash and the
///             anchored root that includes it.
///         The Merkle convention is qbus/verifier/merkle.py's (docs/chain.md):
///         leaf = keccak256(0x00 ++ sha256 digest), node = keccak256(0x01 ++ left ++ right),
///         children in index order, a lone last node paired with itself.
///         Ownership (role management) moves in two steps, OpenZeppelin's Ownable2Step:
///         the owner names a pending owner, who must accept with its own key, so a
///         mistyped address cannot take the contract out of reach.
contract QbusAnchor is Ownable2Step {
    struct Batch {
        bytes32 root;
        uint64 count;
        uint64 blockNumber;
        uint64 timestamp;
        address verifier;
    }

    struct Request {
        address requester;
        bytes32 qasmHash;
        uint32 shots;
        uint64 blockNumber;
        bool fulfilled;
        bytes32 resultHash;
        bytes32 anchorRoot;
        string uri;
    }

    mapping(address => bool) public isVerifier;

    /// Batch ids start at 1; batchCount is the newest.
    uint256 public batchCount;
    mapping(uint256 => Batch) private _batches;
    /// The batch that anchored a root (0: never anchored).
    mapping(bytes32 => uint256) public batchOfRoot;

    /// Request ids start at 1; requestCount is the newest.
    uint256 public requestCount;
    mapping(uint256 => Request) private _requests;

    event VerifierSet(address indexed account, bool enabled);
    event Anchored(uint256 indexed batchId, bytes32 indexed root, uint64 count);
    event RunRequested(
        uint256 indexed requestId,
        address indexed requester,
        bytes32 qasmHash,
        string uri,
        uint32 shots,
        string qasm
    );
    event RunFulfilled(uint256 indexed requestId, bytes32 resultHash, bytes32 anchorRoot);

    error NotVerifier(address account);
    error EmptyBatch();
    error ZeroRoot();
    error RootAlreadyAnchored(bytes32 root, uint256 batchId);
    error NoProgram();
    error QasmHashMismatch(bytes32 given, bytes32 computed);
    error ZeroShots();
    error UnknownRequest(uint256 requestId);
    error AlreadyFulfilled(uint256 requestId);
    error UnknownRoot(bytes32 root);
    error ZeroAddress();
    error RenounceDisabled();

    modifier onlyVerifier() {
        if (!isVerifier[msg.sender]) revert NotVerifier(msg.sender);
        _;
    }

    /// @param verifier An account given the verifier role at once (address(0): none).
    constructor(address verifier) Ownable(msg.sender) {
        if (verifier != address(0)) {
            isVerifier[verifier] = true;
            emit VerifierSet(verifier, true);
        }
    }

    /// Always refused: without an owner nobody could grant or revoke the verifier role
    /// again (no key rotation), so the contract would be stuck with today's verifiers.
    function renounceOwnership() public pure override {
        revert RenounceDisabled();
    }

    /// Grant (enabled) or revoke the verifier role.
    function setVerifier(address account, bool enabled) external onlyOwner {
        if (account == address(0)) revert ZeroAddress();
        isVerifier[account] = enabled;
        emit VerifierSet(account, enabled);
    }

    // -- anchors ----------------------------------------------------------------------

    /// Record the Merkle root of a batch of `count` result hashes; returns its batch id.
    /// A root is anchored once, so a retried transaction cannot make a second batch.
    function anchor(bytes32 root, uint64 count) external onlyVerifier returns (uint256 batchId) {
        if (root == bytes32(0)) revert ZeroRoot();
        if (count == 0) revert EmptyBatch();
        uint256 existing = batchOfRoot[root];
        if (existing != 0) revert RootAlreadyAnchored(root, existing);
        batchId = ++batchCount;
        _batches[batchId] = Batch(
            root, count, uint64(block.number), uint64(block.timestamp), msg.sender
        );
        batchOfRoot[root] = batchId;
        emit Anchored(batchId, root, count);
    }

    function getBatch(uint256 batchId) external view returns (Batch memory) {
        return _batches[batchId];
    }

    /// True when `resultHash` (a sha256 digest) is leaf `index` of batch `batchId`.
    function verifyInclusion(
        uint256 batchId,
        bytes32 resultHash,
        bytes32[] calldata proof,
        uint256 index
    ) external view returns (bool) {
        Batch storage batch = _batches[batchId];
        if (batch.count == 0 || index >= batch.count) return false;
        uint256 levels = 0;
        for (uint256 width = batch.count; width > 1; width = (width + 1) / 2) levels++;
        if (proof.length != levels) return false;
        bytes32 node = keccak256(abi.encodePacked(bytes1(0x00), resultHash));
        for (uint256 i = 0; i < proof.length; i++) {
            node = (index & 1) == 1
                ? keccak256(abi.encodePacked(bytes1(0x01), proof[i], node))
                : keccak256(abi.encodePacked(bytes1(0x01), node, proof[i]));
            index >>= 1;
        }
        return node == batch.root;
    }

    // -- run requests -----------------------------------------------------------------

    /// Ask for a run of an OpenQASM program: give `qasm` (then `qasmHash` is zero or its
    /// keccak256), or leave it empty and give the program's keccak256 and a `uri`.
    function requestRun(string calldata qasm, bytes32 qasmHash, string calldata uri, uint32 shots)
        external
        returns (uint256 requestId)
    {
        if (shots == 0) revert ZeroShots();
        if (bytes(qasm).length > 0) {
            bytes32 computed = keccak256(bytes(qasm));
            if (qasmHash != bytes32(0) && qasmHash != computed) {
                revert QasmHashMismatch(qasmHash, computed);
            }
            qasmHash = computed;
        } else if (qasmHash == bytes32(0) || bytes(uri).length == 0) {
            revert NoProgram();
        }
        requestId = ++requestCount;
        Request storage r = _requests[requestId];
        r.requester = msg.sender;
        r.qasmHash = qasmHash;
        r.shots = shots;
        r.blockNumber = uint64(block.number);
        r.uri = uri;
        // The program text travels in the log only: cheaper than storage, and the
        // listener reads logs anyway.
        emit RunRequested(requestId, msg.sender, qasmHash, uri, shots, qasm);
    }

    function getRequest(uint256 requestId) external view returns (Request memory) {
        return _requests[requestId];
    }

    /// Record a request's verified result, once; `anchorRoot` must be an anchored root.
    function fulfill(uint256 requestId, bytes32 resultHash, bytes32 anchorRoot)
        external
        onlyVerifier
    {
        Request storage r = _requests[requestId];
        if (r.requester == address(0)) revert UnknownRequest(requestId);
        if (r.fulfilled) revert AlreadyFulfilled(requestId);
        if (batchOfRoot[anchorRoot] == 0) revert UnknownRoot(anchorRoot);
        r.fulfilled = true;
        r.resultHash = resultHash;
        r.anchorRoot = anchorRoot;
        emit RunFulfilled(requestId, resultHash, anchorRoot);
    }
}
