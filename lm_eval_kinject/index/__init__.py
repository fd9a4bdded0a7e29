"""Search indexes over chunk texts: lexical (:mod:`.bm25`) and dense (:mod:`.dense`)."""
