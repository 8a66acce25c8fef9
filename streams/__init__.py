"""segue streaming side: event contract, session state, the Faust worker and the producer SDK."""
