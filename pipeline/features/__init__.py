"""Features measured on tiles (histology first): the numbers behind biomarker and bias findings."""
