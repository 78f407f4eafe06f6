"""Write data/samples/dirty.jsonl: a small file with every problem the cleaning lesson covers.

    python data/source/make_dirty_sample.py

It is written as bytes on purpose (a UTF-8 byte-order mark and CRLF line endings, as some
Windows editors save files). The comment on each line says what is wrong with it.
"""

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "samples" / "dirty.jsonl"
SYSTEM = {"role": "system", "content": "You are an Xbox customer support agent. You are friendly and concise."}


def chat(*turns, system=True, **extra):
    roles = ["user", "assistant"] * len(turns)
    messages = [{"role": r, "content": c} for r, c in zip(roles, turns, strict=False)]
    return json.dumps({"messages": ([SYSTEM] if system else []) + messages, **extra}, ensure_ascii=False)


LOG = " ".join(f"[{h:02d}:{m:02d}] network check failed: DHCP timeout on wlan0, retrying;"
               for h in range(14) for m in range(0, 60, 2))

LINES = [
    chat("My Xbox won't connect to Wi-Fi.", "Let's check it: go to Settings > General > Network settings and "
         "choose Test network connection. What does it say?"),                          # 1 valid
    chat("How do I pair a second controller?", "Press the pair button on the console, then hold the pair "
         "button on the controller until the Xbox button flashes quickly."),            # 2 valid
    '{"messages": [{"role": "user", "content": "Is my warranty still valid?"}, {"role": "assistant"',  # 3 broken JSON
    json.dumps({"messages": [SYSTEM, {"role": "user", "content": "Hi"},
                             {"role": "bot", "content": "Hello! How can I help?"}]}),   # 4 unknown role
    json.dumps({"messages": [SYSTEM, {"role": "user", "content": "My console is loud."},
                             {"role": "user", "content": "Like really loud."},
                             {"role": "assistant", "content": "Keep the vents clear of dust."}]}),  # 5 wrong order
    json.dumps({"messages": [SYSTEM, {"role": "User", "content": "How do I take a screenshot?"},
                             {"role": "Assistant", "content": "Press the Share button once."}],
                "intent": "captures_sharing"}),                                         # 6 role case, extra key
    chat("Can I get a refund?", "   "),                                                 # 7 whitespace content
    chat("", "Sure, what's the problem?"),                                              # 8 empty content
    chat("My Xbox won't connect to Wi-Fi.", "Let's check it: go to Settings > General > Network settings and "
         "choose Test network connection. What does it say?"),                          # 9 duplicate of 1
    json.dumps({"messages": [SYSTEM, {"role": "user", "content": "How much storage does the Series S have?"}]}),  # 10 no assistant
    chat("Here is my router log, what is wrong? " + LOG, "Your router isn't giving the console an address. "
         "Restart the router, then run Test network connection."),                      # 11 over-long
    json.dumps({"messages": [SYSTEM, {"role": "user", "content": "What is the Series X storage?"},
                             {"role": "assistant", "content": 1024}]}),                 # 12 number content
    json.dumps({"messages": [SYSTEM, {"role": "user", "content": [{"type": "text", "text": "Help"}]},
                             {"role": "assistant", "content": "Of course, what do you need?"}]}),  # 13 list content
    "",                                                                                 # 14 blank line
    json.dumps({"messages": [{"role": "user", "content": "Is Game Pass on PC too?"}, SYSTEM,
                             {"role": "assistant", "content": "Yes, PC Game Pass is for Windows PCs."}]}),  # 15 system not first
    json.dumps({"messages": "Where do I find my serial number?"}),                      # 16 messages not a list
    json.dumps({"messages": [SYSTEM, {"role": "user", "content": "Can I cancel a pre-order?"},
                             {"role": "assistant", "content": "Yes, from your order history."},
                             {"role": "user", "content": "Thanks!"}]}),                 # 17 ends with the user
    chat("How do I turn on HDR?", "Go to Settings > General > TV & display options > Video modes and "
         "check Allow HDR10.", system=False),                                          # 18 no system prompt (warning)
    chat("Can I use an external drive?", "Yes, a USB 3.1 drive of 128 GB or more works."),  # 19 valid
]

if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(LINES).encode("utf-8") + b"\r\n")
    print(f"wrote {OUT} ({len(LINES)} lines)")
