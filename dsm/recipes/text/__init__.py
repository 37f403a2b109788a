"""Open-vocabulary corpus text: sentences from human-written English and French text
installed from Debian packages, cleaned, written the way a speaker says them, and split
into train and eval by source document (`dsm data text`)."""
