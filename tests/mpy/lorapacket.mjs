// Independent LoRaWAN check for tests/lorawan/test_lorapacket.py: the npm package lora-packet
// (pinned in package.json) parses, verifies, decrypts and builds frames. Reads a JSON list of
// operations on stdin, writes a JSON list of results. Hex in, hex out; EUIs, DevAddr, nonces and
// NetID big-endian (as people write them; lora-packet reverses them for the wire).
import { createRequire } from "node:module";
import fs from "node:fs";

const require = createRequire(import.meta.url);
const lp = require("lora-packet");
const hex = (s) => Buffer.from(s || "", "hex");

function run(op) {
  switch (op.op) {
    case "verify_data": {
      const p = lp.fromWire(hex(op.phy));
      return {
        mtype: p.getMType(), dir: p.getDir(), devaddr: p.DevAddr.toString("hex"),
        fcnt: p.getFCnt(), fport: p.getFPort(), adr: p.getFCtrlADR(), ack: p.getFCtrlACK(),
        fopts: (p.FOpts || Buffer.alloc(0)).toString("hex"),
        mic_ok: lp.verifyMIC(p, hex(op.nwk), undefined, hex(op.fcnt_msb || "0000")),
        payload: lp.decrypt(p, hex(op.app), hex(op.nwk), hex(op.fcnt_msb || "0000")).toString("hex"),
      };
    }
    case "build_data": {
      const p = lp.fromFields({
        MType: op.mtype, DevAddr: hex(op.devaddr), FCnt: op.fcnt, FPort: op.fport,
        FOpts: hex(op.fopts), payload: hex(op.payload), FCtrl: { ACK: !!op.ack, ADR: !!op.adr },
      }, hex(op.app), hex(op.nwk), undefined, hex(op.fcnt_msb || "0000"));
      return { phy: p.getPHYPayload().toString("hex") };
    }
    case "verify_join_request": {
      const p = lp.fromWire(hex(op.phy));
      return {
        mtype: p.getMType(), deveui: p.DevEUI.toString("hex"), appeui: p.AppEUI.toString("hex"),
        devnonce: p.DevNonce.toString("hex"),
        mic_ok: lp.verifyMIC(p, undefined, hex(op.appkey)),
      };
    }
    case "build_join_accept": {
      const fields = {
        MType: "Join Accept", AppNonce: hex(op.appnonce), NetID: hex(op.netid),
        DevAddr: hex(op.devaddr), DLSettings: op.dlsettings, RxDelay: op.rxdelay,
      };
      if (op.cflist) fields.CFList = hex(op.cflist);
      const p = lp.fromFields(fields, undefined, undefined, hex(op.appkey));
      const keys = lp.generateSessionKeys(hex(op.appkey), hex(op.netid), hex(op.appnonce),
        hex(op.devnonce));
      return {
        phy: p.getPHYPayload().toString("hex"),
        nwk: keys.NwkSKey.toString("hex"), app: keys.AppSKey.toString("hex"),
      };
    }
    default:
      throw new Error(`unknown op ${op.op}`);
  }
}

const ops = JSON.parse(fs.readFileSync(0, "utf8"));
process.stdout.write(JSON.stringify(ops.map(run)));
