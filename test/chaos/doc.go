// Package chaos runs fault-injection runs against halb: it draws a fault schedule from a seed, injects it into a lab step by step through the Lab interfaces (Runner), undoes every fault, and judges what each step observed against halb's invariants.
package chaos
