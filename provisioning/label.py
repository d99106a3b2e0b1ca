"""A printable label per node: an SVG with a QR code that opens the node's page in the fleet."""

import io
from xml.sax.saxutils import escape

import segno

# 62 mm wide continuous tape (Brother QL and similar), 29 mm high: the QR code left, text right.
WIDTH_MM, HEIGHT_MM = 62, 29


def node_url(fleet_url: str, node_id: str) -> str:
    """The address of the node's page in the fleet's web UI."""
    return f"{fleet_url.rstrip('/')}/nodes/{node_id}"


def qr_svg(url: str) -> str:
    """The QR code of url as an SVG fragment (segno, error correction M: survives scuffs)."""
    out = io.BytesIO()
    # omitsize: segno writes a viewBox instead of a width/height, so the caller places it.
    segno.make(url, error="m").save(out, kind="svg", scale=1, border=2, xmldecl=False,
                                    svgns=True, omitsize=True)
    return out.getvalue().decode()


def label_svg(node_id: str, fleet_url: str, board: str | None = None,
              dev_eui: str | None = None) -> str:
    """The label: QR code to the node's page, its id, board and DevEUI (nothing secret)."""
    url = node_url(fleet_url, node_id)
    qr = qr_svg(url)
    qr_mm = HEIGHT_MM - 2
    lines = [f'<text x="{HEIGHT_MM}" y="9" font-size="5" font-weight="bold">'
             f'{escape(node_id)}</text>']
    y = 15
    # Sizes chosen so a 16-digit DevEUI and a typical URL fit the 32 mm beside the code.
    for text, font in ((board, 2.4), (f"DevEUI {dev_eui}" if dev_eui else None, 2.2),
                       (url.split("://", 1)[-1], 1.6)):
        if text:
            lines.append(f'<text x="{HEIGHT_MM}" y="{y}" font-size="{font}">{escape(text)}</text>')
            y += 4.5
    # The QR SVG is nested as-is, scaled into a square by its own viewBox.
    inner = qr.replace("<svg ", f'<svg x="1" y="1" width="{qr_mm}" height="{qr_mm}" ', 1)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_MM}mm" height="{HEIGHT_MM}mm" '
            f'viewBox="0 0 {WIDTH_MM} {HEIGHT_MM}" font-family="DejaVu Sans, sans-serif">'
            f'<title>{escape(node_id)}</title>'
            f'<rect width="{WIDTH_MM}" height="{HEIGHT_MM}" fill="#fff"/>'
            + inner + "".join(lines) + "</svg>\n")
