"""Review by people: the review queue's tiles, label versions, blind second ratings and their
adjudication, accepted reviews (the reviewed SEG and SR), and the case images the pages show.

Everything here is append-only history: a label version, an adjudication decision or an
accepted review is never changed, only followed by a newer one.
"""
