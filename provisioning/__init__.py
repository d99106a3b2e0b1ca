"""Host tools that turn a board into a working node: boards, images, flashing, labels."""
