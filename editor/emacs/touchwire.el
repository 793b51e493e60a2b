;;; touchwire.el --- Reload the guest's app when a file is saved  -*- lexical-binding: t; -*-

;; Version: 0.1.0
;; Package-Requires: ((emacs "25.1"))
;; Keywords: tools, processes
;; URL: see the touchwire README

;;; Commentary:

;; After each save of a matching file (default: Python files) this runs
;; `touchwire send --wait --path FILE' as an asynchronous process, so a save
;; never waits on the network.  touchwire sends a trigger only if the file is
;; relevant (tracked by git, or untracked but not ignored) and waits for the
;; guest's answer: "reloaded app on HOST in 412 ms" when the guest has a ready
;; check, or the failure.  The result is one line in the echo area, never a
;; prompt; a failure's traceback goes to *Messages*.
;;
;; Per buffer: M-x touchwire-mode.  Everywhere: (global-touchwire-mode 1).
;; M-x touchwire-send sends a reload now.

;;; Code:

(require 'subr-x)

(defgroup touchwire nil
  "Reload the guest's app when a file is saved."
  :group 'tools)

(defcustom touchwire-command "touchwire"
  "The touchwire program."
  :type 'string)

(defcustom touchwire-file-regexp "\\.py\\'"
  "Files whose save sends a trigger."
  :type 'regexp)

(defun touchwire--sentinel (process _event)
  "Show PROCESS's result in one line once it has ended, then clean up.
On failure the whole output (the app's traceback) goes to *Messages* first."
  (when (memq (process-status process) '(exit signal))
    (let* ((buffer (process-buffer process))
           (status (process-exit-status process))
           (text (if (buffer-live-p buffer) (with-current-buffer buffer (buffer-string)) ""))
           (lines (split-string text "\n" t "[ \t]+"))
           (line (car (last lines))))
      (unless (zerop status)
        (let ((inhibit-message t))
          (dolist (earlier (butlast lines))
            (message "%s" earlier))))
      (cond (line (message "%s" line))
            ((not (zerop status)) (message "touchwire: exited with status %d" status)))
      (when (buffer-live-p buffer)
        (kill-buffer buffer)))))

;;;###autoload
(defun touchwire-send (&optional file)
  "Run `touchwire send' in the background, for FILE when given."
  (interactive)
  (make-process
   :name "touchwire"
   :buffer (generate-new-buffer " *touchwire*")
   :command (append (list touchwire-command "send" "--wait") (when file (list "--path" file)))
   :connection-type 'pipe
   :noquery t
   :sentinel #'touchwire--sentinel))

(defun touchwire--after-save ()
  "Send a trigger for the file just saved, if it matches `touchwire-file-regexp'."
  (when (and buffer-file-name (string-match-p touchwire-file-regexp buffer-file-name))
    (touchwire-send buffer-file-name)))

;;;###autoload
(define-minor-mode touchwire-mode
  "Reload the guest's app each time this buffer is saved."
  :lighter " tw"
  (if touchwire-mode
      (add-hook 'after-save-hook #'touchwire--after-save nil t)
    (remove-hook 'after-save-hook #'touchwire--after-save t)))

(defun touchwire--turn-on ()
  "Turn on `touchwire-mode' in file buffers."
  (when buffer-file-name
    (touchwire-mode 1)))

;;;###autoload
(define-globalized-minor-mode global-touchwire-mode touchwire-mode touchwire--turn-on)

(provide 'touchwire)
;;; touchwire.el ends here
