"""A real Ethereum client against the built-in engine: web3.py and eth-account from PyPI
(installed by .ci/run) send signed transactions, wait for receipts, deploy a contract,
read its logs, balances and blocks, and follow newHeads over WebSocket.

Usage: web3_client.py HTTP_URL WS_URL COUNTER_HEX_FILE. Prints one line per step and
exits non-zero with the reason on the first thing that is wrong.
"""

import asyncio
import sys

from eth_account import Account
from web3 import AsyncWeb3, Web3, WebSocketProvider

# The first two accounts of the documented development mnemonic
# `test test test test test test test test test test test junk`.
KEY0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ADDR1 = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def send(w3, acct, tx):
    tx.setdefault("chainId", w3.eth.chain_id)
    tx.setdefault("nonce", w3.eth.get_transaction_count(acct.address, "pending"))
    base = w3.eth.get_block("latest")["baseFeePerGas"]
    tx.setdefault("maxPriorityFeePerGas", w3.eth.max_priority_fee)
    tx.setdefault("maxFeePerGas", 2 * base + tx["maxPriorityFeePerGas"])
    if "gas" not in tx:
        tx["gas"] = w3.eth.estimate_gas({k: v for k, v in tx.items() if k != "nonce"} | {"from": acct.address})
    signed = acct.sign_transaction(tx)
    h = w3.eth.send_raw_transaction(signed.raw_transaction)
    check(h == signed.hash, f"eth_sendRawTransaction returned the hash {h.hex()}")
    r = w3.eth.wait_for_transaction_receipt(h, timeout=60, poll_latency=0.2)
    return r


def sync_part(http, counter_hex):
    w3 = Web3(Web3.HTTPProvider(http, request_kwargs={"timeout": 10}))
    check(w3.is_connected(), "connected over HTTP")
    check(w3.eth.chain_id == 1337, f"chain id {w3.eth.chain_id}")
    acct = Account.from_key(KEY0)
    start = w3.eth.get_balance(ADDR1)

    # A plain transfer.
    r = send(w3, acct, {"to": ADDR1, "value": Web3.to_wei(1.5, "ether")})
    check(r["status"] == 1, f"transfer included in block {r['blockNumber']}")
    check(w3.eth.get_balance(ADDR1) - start == Web3.to_wei(1.5, "ether"), "recipient balance grew by 1.5 ETH")
    tx = w3.eth.get_transaction(r["transactionHash"])
    check(tx["from"] == acct.address and tx["to"] == ADDR1, "eth_getTransactionByHash names sender and recipient")
    block = w3.eth.get_block(r["blockNumber"], full_transactions=True)
    check(any(t["hash"] == r["transactionHash"] for t in block["transactions"]), "the block holds the transaction")
    check(block["hash"] == r["blockHash"], "receipt and block agree on the block hash")

    # A contract from checked-in bytecode: every call counts and logs (topic = caller).
    code = open(counter_hex).read().strip()
    r = send(w3, acct, {"data": "0x" + code, "gas": 200_000})
    addr = r["contractAddress"]
    check(r["status"] == 1 and addr is not None, f"contract deployed at {addr}")
    check(len(w3.eth.get_code(addr)) == 20, "eth_getCode returns the 20-byte runtime")
    for i in range(1, 4):
        r = send(w3, acct, {"to": addr, "gas": 100_000})
        check(r["status"] == 1 and len(r["logs"]) == 1, f"call {i} logged once")
        check(int.from_bytes(r["logs"][0]["data"], "big") == i, f"call {i} logged the count {i}")
    check(int.from_bytes(w3.eth.get_storage_at(addr, 0), "big") == 3, "eth_getStorageAt reads the count 3")
    w3.eth.call({"to": addr, "from": acct.address})
    check(int.from_bytes(w3.eth.get_storage_at(addr, 0), "big") == 3, "eth_call ran the contract without changing its state")
    topic = "0x" + "00" * 12 + acct.address[2:].lower()
    logs = w3.eth.get_logs({"fromBlock": 0, "toBlock": "latest", "address": addr, "topics": [topic]})
    check([int.from_bytes(l["data"], "big") for l in logs] == [1, 2, 3], "eth_getLogs finds the three logs in order")
    fin = w3.eth.get_block("finalized")
    check(fin["number"] >= 1, f"finalized block {fin['number']}")
    hist = w3.eth.fee_history(4, "latest", [25, 75])
    check(len(hist["baseFeePerGas"]) == 5, "eth_feeHistory answers")


async def ws_part(ws):
    async with AsyncWeb3(WebSocketProvider(ws)) as w3:
        sub = await w3.eth.subscribe("newHeads")
        check(isinstance(sub, str) and sub.startswith("0x"), f"eth_subscribe newHeads over WebSocket: id {sub}")
        heads = []
        async for msg in w3.socket.process_subscriptions():
            heads.append(msg["result"])
            if len(heads) == 3:
                break
        nums = [h["number"] for h in heads]
        check(nums == list(range(nums[0], nums[0] + 3)), f"three consecutive heads {nums}")
        check(all(heads[i + 1]["parentHash"] == heads[i]["hash"] for i in range(2)), "each head's parent is the one before")
        await w3.eth.unsubscribe(sub)


def main():
    http, ws, counter_hex = sys.argv[1:4]
    sync_part(http, counter_hex)
    asyncio.run(asyncio.wait_for(ws_part(ws), timeout=60))
    print("web3.py: all checks passed", flush=True)


if __name__ == "__main__":
    main()
